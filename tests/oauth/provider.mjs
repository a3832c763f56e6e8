// A real OpenID provider (oidc-provider, the certified Node implementation) for the gateway's OAuth tests.
//
// Configured by the JSON in OIDC_TEST_CONFIG: {port, interactive, clients: [oidc-provider client metadata], resources:
// {"<resource URL>": {"scope": "...", "format": "jwt" | "opaque", "alg", "ttl"}}}. It issues access tokens for the resources it
// knows (RFC 8707 resource indicators), JWT or opaque per resource, answers introspection (RFC 7662), and prints
// "READY <issuer>" once it listens on 127.0.0.1. It stops on SIGTERM (tests run it with no stdin).
import { generateKeyPairSync } from 'node:crypto';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

// ES modules ignore NODE_PATH: resolve the package from it explicitly (the tests set it to .tools/node_modules).
const require = createRequire(pathToFileURL(join(process.env.NODE_PATH, 'noop.js')));
const { default: Provider, errors } = await import(pathToFileURL(require.resolve('oidc-provider')));

const config = JSON.parse(process.env.OIDC_TEST_CONFIG);
const issuer = `http://127.0.0.1:${config.port}`;

function signingKey(type, options, alg, kid) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), alg, kid, use: 'sig' };
}

const jwks = {
  keys: [
    signingKey('ec', { namedCurve: 'P-256' }, 'ES256', 'es256-test'),
    signingKey('rsa', { modulusLength: 2048 }, 'RS256', 'rs256-test'),
  ],
};
const scopes = new Set(['openid', 'offline_access']);
for (const resource of Object.values(config.resources)) {
  for (const scope of resource.scope.split(' ')) scopes.add(scope);
}

const provider = new Provider(issuer, {
  clients: config.clients,
  jwks,
  scopes: [...scopes],
  features: {
    // config.interactive: the provider's own login and consent pages (any login, any password), and Dynamic Client
    // Registration (RFC 7591), for the authorization-code flow a browser drives.
    devInteractions: { enabled: Boolean(config.interactive) },
    registration: { enabled: Boolean(config.interactive) },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // One resource per request: the gateway binds tokens to a single server (RFC 8707 audience).
      defaultResource: (ctx, client, oneOf) => oneOf,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        const found = config.resources[resourceIndicator];
        if (!found) throw new errors.InvalidTarget();
        const info = { scope: found.scope, audience: resourceIndicator, accessTokenTTL: found.ttl ?? 300 };
        if (found.format === 'jwt') {
          return { ...info, accessTokenFormat: 'jwt', jwt: { sign: { alg: found.alg ?? 'ES256' } } };
        }
        return { ...info, accessTokenFormat: 'opaque' };
      },
    },
  },
});

const server = provider.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
