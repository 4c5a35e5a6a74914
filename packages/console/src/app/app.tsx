import { type ReactNode, useEffect, useState } from 'react';
import { AgentDetailPage, AgentsPage } from './pages/agents.tsx';
import { ChatPage } from './pages/chat.tsx';
import { ConfigKeyPage, ConfigPage } from './pages/config.tsx';
import { InstancePage, InstancesPage } from './pages/instances.tsx';
import { KeysPage } from './pages/keys.tsx';
import { McpCatalogPage, McpNewServerPage } from './pages/mcp-add.tsx';
import { McpServerPage, McpServersPage } from './pages/mcp-servers.tsx';
import { OverviewPage } from './pages/overview.tsx';
import { ProvidersPage } from './pages/providers.tsx';
import { SecretsPage } from './pages/secrets.tsx';
import { ServiceDetailPage, ServicesPage } from './pages/services.tsx';
import { SessionDetailPage, SessionsPage } from './pages/sessions.tsx';
import { SignIn } from './pages/sign-in.tsx';
import { SubmitTaskPage } from './pages/submit-task.tsx';
import { TaskDetailPage } from './pages/task-detail.tsx';
import { TasksPage } from './pages/tasks.tsx';
import { TemplateDetailPage, TemplateEditorPage, TemplatesPage } from './pages/templates.tsx';
import { TenantDetailPage, TenantsPage } from './pages/tenants.tsx';
import { ToolApprovalsPage } from './pages/tool-approvals.tsx';
import { ToolCallsPage } from './pages/tool-calls.tsx';
import { ToolPoliciesPage, ToolPolicyEditorPage } from './pages/tool-policies.tsx';
import { TOOLS_SECTION_PATHS, ToolDetailPage, ToolsPage } from './pages/tools.tsx';
import { TopicsPage, TopicTailPage } from './pages/topics.tsx';
import { UsagePage } from './pages/usage.tsx';
import { Link, match, navigate, useLocation } from './router.tsx';
import { type Session, SessionContext, signIn, signOut, storedKey } from './session.tsx';
import { Loading } from './ui.tsx';

const NAV = [
  { to: '/overview', label: 'Overview' },
  { to: '/tasks', label: 'Tasks' },
  { to: '/agents', label: 'Agents' },
  { to: '/templates', label: 'Templates' },
  { to: '/sessions', label: 'Sessions' },
  { to: '/instances', label: 'Instances' },
  // Tools, MCP servers, policies, approvals, the call log: tabs of one section.
  { to: '/tools', label: 'Tools', section: TOOLS_SECTION_PATHS },
  { to: '/topics', label: 'Topics' },
  { to: '/config', label: 'Config' },
  { to: '/services', label: 'Services' },
  { to: '/chat', label: 'Chat' },
  { to: '/providers', label: 'Providers' },
  { to: '/usage', label: 'Usage' },
  { to: '/secrets', label: 'Secrets' },
  { to: '/keys', label: 'API keys', adminOnly: true },
  { to: '/tenants', label: 'Tenants', adminOnly: true, systemOnly: true },
] as const satisfies readonly {
  to: string;
  label: string;
  adminOnly?: boolean;
  systemOnly?: boolean;
  /** The paths of the section's pages, when it has several. */
  section?: readonly string[];
}[];

/** Whether `path` is in the navigation entry's section. */
function within(entry: (typeof NAV)[number], path: string): boolean {
  const roots = 'section' in entry ? entry.section : [entry.to];
  return roots.some((root) => path === root || path.startsWith(`${root}/`));
}

/** The sections the credential may open: keys are for admins, tenants for system admins. */
function navFor(who: Session['who']) {
  return NAV.filter(
    (n) =>
      (!('adminOnly' in n) || who.role === 'admin') &&
      (!('systemOnly' in n) || who.tenant.kind === 'system'),
  );
}

function route(path: string): ReactNode {
  if (path === '/' || path === '') return <Redirect to="/overview" />;
  if (path === '/overview') return <OverviewPage />;
  if (path === '/tasks') return <TasksPage />;
  if (path === '/tasks/new') return <SubmitTaskPage />;
  const task = match('/tasks/:id', path);
  if (task?.id) return <TaskDetailPage key={task.id} id={task.id} />;
  if (path === '/templates') return <TemplatesPage />;
  if (path === '/templates/new') return <TemplateEditorPage />;
  const editing = match('/templates/:name/edit', path);
  if (editing?.name) return <TemplateEditorPage key={editing.name} name={editing.name} />;
  const template = match('/templates/:name', path);
  if (template?.name) return <TemplateDetailPage key={template.name} name={template.name} />;
  if (path === '/sessions') return <SessionsPage />;
  const session = match('/sessions/:id', path);
  if (session?.id) return <SessionDetailPage key={session.id} id={session.id} />;
  if (path === '/instances') return <InstancesPage />;
  const instance = match('/instances/:id', path);
  if (instance?.id) return <InstancePage key={instance.id} id={instance.id} />;
  if (path === '/topics') return <TopicsPage />;
  const topic = match('/topics/:name', path);
  if (topic?.name) return <TopicTailPage key={topic.name} name={topic.name} />;
  if (path === '/tools') return <ToolsPage />;
  const tool = match('/tools/:name', path);
  if (tool?.name) return <ToolDetailPage key={tool.name} name={tool.name} />;
  if (path === '/providers') return <ProvidersPage />;
  if (path === '/usage') return <UsagePage />;
  if (path === '/chat') return <ChatPage />;
  if (path === '/mcp-servers') return <McpServersPage />;
  const mcpServer = match('/mcp-servers/:name', path);
  if (mcpServer?.name) return <McpServerPage key={mcpServer.name} name={mcpServer.name} />;
  if (path === '/mcp-catalog') return <McpCatalogPage />;
  if (path === '/mcp-new') return <McpNewServerPage />;
  if (path === '/tool-policies') return <ToolPoliciesPage />;
  if (path === '/tool-policies/new') return <ToolPolicyEditorPage />;
  const policy = match('/tool-policies/:name', path);
  if (policy?.name) return <ToolPolicyEditorPage key={policy.name} name={policy.name} />;
  if (path === '/tool-approvals') return <ToolApprovalsPage />;
  if (path === '/tool-calls') return <ToolCallsPage />;
  if (path === '/services') return <ServicesPage />;
  const service = match('/services/:name', path);
  if (service?.name) return <ServiceDetailPage key={service.name} name={service.name} />;
  if (path === '/config') return <ConfigPage />;
  if (path === '/config/key') return <ConfigKeyPage />;
  if (path === '/secrets') return <SecretsPage />;
  if (path === '/keys') return <KeysPage />;
  if (path === '/tenants') return <TenantsPage />;
  const tenant = match('/tenants/:id', path);
  if (tenant?.id) return <TenantDetailPage key={tenant.id} id={tenant.id} />;
  if (path === '/agents') return <AgentsPage />;
  const agent = match('/agents/:id', path);
  if (agent?.id) return <AgentDetailPage key={agent.id} id={agent.id} />;
  return (
    <>
      <h1>Not found</h1>
      <p>
        Nothing lives at <code>{path}</code>. <Link to="/tasks">Go to the tasks.</Link>
      </p>
    </>
  );
}

function Redirect({ to }: { to: string }) {
  useEffect(() => navigate(to, { replace: true }), [to]);
  return null;
}

export function App() {
  const [session, setSession] = useState<Session | undefined>();
  // A key kept in this tab signs in again after a reload.
  const [restoring, setRestoring] = useState(() => storedKey() !== null);
  const [notice, setNotice] = useState<string | undefined>();
  const { path } = useLocation();

  useEffect(() => {
    const key = storedKey();
    if (key === null) return;
    signIn(key)
      .then(setSession, (err: unknown) => {
        signOut(undefined);
        setNotice(err instanceof Error ? err.message : String(err));
      })
      .finally(() => setRestoring(false));
  }, []);

  // Page titles follow the route, for history and assistive technology.
  useEffect(() => {
    const section = NAV.find((n) => within(n, path))?.label;
    document.title = section ? `${section} · Orchestra` : 'Orchestra';
  }, [path]);

  if (restoring) return <Loading what="your session" />;
  if (session === undefined) {
    return <SignIn onSignedIn={setSession} {...(notice ? { notice } : {})} />;
  }
  const leave = () => {
    signOut(session);
    setSession(undefined);
    setNotice(undefined);
    navigate('/', { replace: true });
  };
  return (
    <SessionContext.Provider value={session}>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <Link to="/" className="brand">
          Orchestra
        </Link>
        <nav aria-label="Sections">
          <ul>
            {navFor(session.who).map((n) => (
              <li key={n.to}>
                <Link to={n.to} aria-current={within(n, path) ? 'page' : undefined}>
                  {n.label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <div className="who">
          <span title={`tenant ${session.who.tenant.id}`}>{session.who.tenant.name}</span>
          <span className="role" title="Your role">
            {session.who.role}
          </span>
          <button type="button" onClick={leave}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {route(path)}
      </main>
    </SessionContext.Provider>
  );
}
