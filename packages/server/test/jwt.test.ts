import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { exportJWK, generateKeyPair, type JWTPayload, SignJWT } from 'jose';
import { closedPort, expectError, startTestServer, type TestServer } from './helpers.ts';

const SECRET = 'a-test-secret-that-is-at-least-32-characters-long';
const ISSUER = 'https://idp.test';
const AUDIENCE = 'orchestra';

function hs256(claims: JWTPayload, options: { secret?: string; expiresIn?: string | number } = {}) {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt()
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setExpirationTime(options.expiresIn ?? '5m')
    .sign(new TextEncoder().encode(options.secret ?? SECRET));
}

describe('JWT bearer tokens', () => {
  let server: TestServer;
  let jwks: Server;
  let signingKey: CryptoKey;
  const kid = 'test-key-1';

  before(async () => {
    const pair = await generateKeyPair('ES256');
    signingKey = pair.privateKey;
    const publicJwk = { ...(await exportJWK(pair.publicKey)), kid, alg: 'ES256', use: 'sig' };
    jwks = createServer((_req, res) => {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ keys: [publicJwk] }));
    });
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    const { port } = jwks.address() as AddressInfo;
    server = await startTestServer({
      env: {
        ORCHESTRA_JWT_SECRET: SECRET,
        ORCHESTRA_JWT_JWKS_URL: `http://127.0.0.1:${port}/.well-known/jwks.json`,
        ORCHESTRA_JWT_ISSUER: ISSUER,
        ORCHESTRA_JWT_AUDIENCE: AUDIENCE,
      },
    });
  });

  after(async () => {
    await server.stop();
    jwks.closeAllConnections();
    await new Promise((resolve) => jwks.close(resolve));
  });

  test('an HS256 token names its tenant, role and subject', async () => {
    const token = await hs256({ sub: 'user:ada', tenant_id: 'default', role: 'operator' });
    const res = await server.call('GET', '/v1/whoami', { key: token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.tenant.id, 'default');
    assert.equal(res.body.role, 'operator');
    assert.deepEqual(
      {
        type: res.body.credential.type,
        subject: res.body.credential.subject,
        issuer: res.body.credential.issuer,
      },
      { type: 'jwt', subject: 'user:ada', issuer: ISSUER },
    );
  });

  test('roles in tokens are enforced like key roles', async () => {
    const viewer = await hs256({ sub: 'user:v', tenant_id: 'default', role: 'viewer' });
    expectError(
      await server.call('GET', '/v1/api-keys', { key: viewer }),
      403,
      'PERMISSION_DENIED',
    );
    const admin = await hs256({ sub: 'svc:deployer', tenant_id: 'default', role: 'admin' });
    const created = await server.call('POST', '/v1/api-keys', {
      key: admin,
      body: { name: 'from jwt', role: 'viewer' },
    });
    assert.equal(created.status, 201);
    assert.equal(created.body.created_by, 'jwt:default:svc:deployer');
  });

  test('an asymmetric token verifies against the JWKS endpoint', async () => {
    const token = await new SignJWT({ sub: 'service:tasks', tenant_id: 'default', role: 'agent' })
      .setProtectedHeader({ alg: 'ES256', kid })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime('5m')
      .sign(signingKey);
    const res = await server.call('GET', '/v1/whoami', { key: token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.role, 'agent');
  });

  test('tokens that are forged, expired, for someone else or incomplete are refused', async () => {
    const cases: [string, Promise<string>, string][] = [
      [
        'wrong secret',
        hs256({ sub: 'u', tenant_id: 'default', role: 'admin' }, { secret: 'x'.repeat(40) }),
        'INVALID_TOKEN',
      ],
      [
        'expired',
        hs256(
          { sub: 'u', tenant_id: 'default', role: 'admin' },
          { expiresIn: Math.floor(Date.now() / 1000) - 60 },
        ),
        'TOKEN_EXPIRED',
      ],
      ['unknown tenant', hs256({ sub: 'u', tenant_id: 'ghost', role: 'admin' }), 'INVALID_TOKEN'],
      ['no tenant', hs256({ sub: 'u', role: 'admin' }), 'INVALID_TOKEN'],
      ['bad role', hs256({ sub: 'u', tenant_id: 'default', role: 'root' }), 'INVALID_TOKEN'],
      ['no subject', hs256({ tenant_id: 'default', role: 'admin' }), 'INVALID_TOKEN'],
      [
        'wrong audience',
        new SignJWT({ sub: 'u', tenant_id: 'default', role: 'admin' })
          .setProtectedHeader({ alg: 'HS256' })
          .setIssuer(ISSUER)
          .setAudience('someone-else')
          .setExpirationTime('5m')
          .sign(new TextEncoder().encode(SECRET)),
        'INVALID_TOKEN',
      ],
      ['not a JWT', Promise.resolve('hello.world.again'), 'INVALID_TOKEN'],
      [
        'no expiry',
        new SignJWT({ sub: 'u', tenant_id: 'default', role: 'admin' })
          .setProtectedHeader({ alg: 'HS256' })
          .setIssuer(ISSUER)
          .setAudience(AUDIENCE)
          .sign(new TextEncoder().encode(SECRET)),
        'INVALID_TOKEN',
      ],
    ];
    for (const [name, token, code] of cases) {
      const res = await server.call('GET', '/v1/whoami', { key: await token });
      assert.equal(res.body?.error?.code, code, `${name}: ${JSON.stringify(res.body)}`);
      expectError(res, 401, code);
    }
  });

  test('an unsigned token (alg none) is refused', async () => {
    const header = Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url');
    const payload = Buffer.from(
      JSON.stringify({ sub: 'u', tenant_id: 'default', role: 'admin' }),
    ).toString('base64url');
    expectError(
      await server.call('GET', '/v1/whoami', { key: `${header}.${payload}.` }),
      401,
      'INVALID_TOKEN',
    );
  });
});

describe('JWT not configured', () => {
  test('bearer tokens are refused with a message that says why', async () => {
    const server = await startTestServer();
    try {
      const token = await hs256({ sub: 'u', tenant_id: 'default', role: 'admin' });
      const error = expectError(
        await server.call('GET', '/v1/whoami', { key: token }),
        401,
        'INVALID_TOKEN',
      );
      assert.match(error.message, /not configured/);
    } finally {
      await server.stop();
    }
  });
});

describe('JWKS endpoint down', () => {
  test('asymmetric tokens get 503 AUTH_PROVIDER_UNAVAILABLE with Retry-After; API keys still work', async () => {
    const port = await closedPort();
    const server = await startTestServer({
      env: { ORCHESTRA_JWT_JWKS_URL: `http://127.0.0.1:${port}/jwks.json` },
    });
    try {
      const { privateKey } = await generateKeyPair('ES256');
      const token = await new SignJWT({ sub: 's', tenant_id: 'default', role: 'agent' })
        .setProtectedHeader({ alg: 'ES256', kid: 'k' })
        .setExpirationTime('5m')
        .sign(privateKey);
      const res = await server.call('GET', '/v1/whoami', { key: token });
      expectError(res, 503, 'AUTH_PROVIDER_UNAVAILABLE');
      assert.equal(res.headers.get('retry-after'), '5');
      assert.equal((await server.call('GET', '/v1/whoami')).status, 200);
    } finally {
      await server.stop();
    }
  });
});
