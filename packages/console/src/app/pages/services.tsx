import type { ServiceInstance } from '@orchestra/sdk';
import { useTopic } from '../live.ts';
import { Link } from '../router.tsx';
import { useSession } from '../session.tsx';
import {
  Badge,
  ConfirmButton,
  Empty,
  ErrorBox,
  Loading,
  PageHeader,
  Time,
  useAsync,
  useThrottled,
} from '../ui.tsx';

export function ServicesPage() {
  const { client, topics } = useSession();
  const services = useAsync(() => client.services.list(), [client]);
  const reload = useThrottled(services.reload, 500);
  useTopic(topics, 'services.*', reload);
  return (
    <>
      <PageHeader title="Services" />
      {services.error !== undefined && (
        <ErrorBox error={services.error} onRetry={services.reload} />
      )}
      {services.data === undefined ? (
        services.error === undefined && <Loading what="services" />
      ) : services.data.length === 0 ? (
        <Empty>
          No service has registered an instance. Services register with the SDK's ServiceClient, the
          CLI or PUT /v1/services/&lt;name&gt;/instances/&lt;id&gt;.
        </Empty>
      ) : (
        <div className="table-wrap">
          <table aria-label="Services">
            <thead>
              <tr>
                <th scope="col">Service</th>
                <th scope="col">Instances</th>
                <th scope="col">Passing</th>
              </tr>
            </thead>
            <tbody>
              {services.data.map((s) => (
                <tr key={s.name}>
                  <td>
                    <Link to={`/services/${encodeURIComponent(s.name)}`}>{s.name}</Link>
                  </td>
                  <td>{s.instances}</td>
                  <td>{s.passing}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}

export function ServiceDetailPage({ name }: { name: string }) {
  const { client, topics, canWrite } = useSession();
  const service = useAsync(() => client.services.instances(name, { all: true }), [client, name]);
  const reload = useThrottled(service.reload, 300);
  useTopic(topics, `services.${name}`, reload, reload);
  return (
    <>
      <PageHeader title={`Service ${name}`} />
      {service.error !== undefined && <ErrorBox error={service.error} onRetry={service.reload} />}
      {service.data === undefined ? (
        service.error === undefined && <Loading what="instances" />
      ) : service.data.instances.length === 0 ? (
        <Empty>No instance is registered now.</Empty>
      ) : (
        <div className="table-wrap">
          <table aria-label="Instances">
            <thead>
              <tr>
                <th scope="col">Instance</th>
                <th scope="col">Address</th>
                <th scope="col">Health</th>
                <th scope="col">Last check</th>
                <th scope="col">Registered</th>
                {canWrite && (
                  <th scope="col">
                    <span className="sr-only">Actions</span>
                  </th>
                )}
              </tr>
            </thead>
            <tbody>
              {service.data.instances.map((i: ServiceInstance) => (
                <tr key={i.id} data-instance={i.id}>
                  <td>{i.id}</td>
                  <td>
                    <code>
                      {i.address}:{i.port}
                    </code>
                  </td>
                  <td>
                    <Badge value={i.status} />
                    {i.last_error && <div className="muted">{i.last_error}</div>}
                  </td>
                  <td>
                    <Time iso={i.checked_at} />
                    {i.check_latency_ms !== null && (
                      <span className="muted"> ({i.check_latency_ms} ms)</span>
                    )}
                  </td>
                  <td>
                    <Time iso={i.registered_at} />
                  </td>
                  {canWrite && (
                    <td>
                      {/* Drops the instance from discovery at once: asked once more. */}
                      <ConfirmButton
                        label="Deregister"
                        ariaLabel={`Deregister ${i.id}`}
                        confirmLabel={`Deregister ${i.id}`}
                        onConfirm={async () => {
                          await client.services.deregister(name, i.id);
                          service.reload();
                        }}
                      />
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
