// A real OpenID Connect provider for Luca's tests: panva's oidc-provider, its development
// login and consent forms (any password; the login name picks an account below), one client.
//
// Environment: PORT (it listens on 127.0.0.1:PORT and is the issuer http://127.0.0.1:PORT),
// OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI (exact match, as real providers do).
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const clientId = process.env.OIDC_CLIENT_ID;

// Login name -> claims. `wrong-audience` is a provider misbehaving on purpose: its ID tokens are
// re-signed with this provider's own key but addressed to another client.
const ACCOUNTS = {
  ada: { email: 'ada@lovelace.example', email_verified: true, name: 'Ada Lovelace' },
  ADA: { email: 'Ada@Lovelace.example', email_verified: true, name: 'Ada Lovelace' },
  grace: { email: 'grace@hopper.example', email_verified: true, name: 'Grace Hopper' },
  unverified: { email: 'mallory@lovelace.example', email_verified: false, name: 'Mallory' },
  'no-email': { name: 'Nobody' },
  'wrong-audience': { email: 'eve@lovelace.example', email_verified: true, name: 'Eve' },
};

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: process.env.OIDC_CLIENT_SECRET,
    redirect_uris: [process.env.OIDC_REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(16).toString('hex')] },
  pkce: { required: () => true },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  // Like Google and Entra ID: the scopes' claims go into the ID token too, not only /me.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  async findAccount(_ctx, sub) {
    if (!Object.hasOwn(ACCOUNTS, sub)) return undefined;
    return { accountId: sub, claims: async () => ({ sub, ...ACCOUNTS[sub] }) };
  },
});

function base64url(value) {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

function readdressed(idToken, audience) {
  const [header, payload] = idToken.split('.').slice(0, 2).map((part) => JSON.parse(Buffer.from(part, 'base64url')));
  const input = `${base64url(header)}.${base64url({ ...payload, aud: audience })}`;
  return `${input}.${sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
}

provider.use(async (ctx, next) => {
  await next();
  if (ctx.method === 'POST' && ctx.path === '/token' && ctx.body?.id_token) {
    const claims = JSON.parse(Buffer.from(ctx.body.id_token.split('.')[1], 'base64url'));
    if (claims.sub === 'wrong-audience') ctx.body = { ...ctx.body, id_token: readdressed(ctx.body.id_token, 'another-client') };
  }
});

provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
