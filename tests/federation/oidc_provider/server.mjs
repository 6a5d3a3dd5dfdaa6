// A real, certified OpenID Connect provider (panva/oidc-provider) for the test suite only.
// Pinned to oidc-provider 8.8.1: the 9.x line supports Node 22+ only (it warns "Unsupported
// runtime" on Node 20); 8.x supports Node 18 and later.
//
// tests/federation/oidc_provider.py starts it as `node server.mjs` with stdin on a pipe:
//
//   environment  OIDC_CLIENTS  JSON list of {client_id, client_secret, redirect_uris,
//                              token_endpoint_auth_method?} (the method defaults to
//                              client_secret_basic)
//   listens on   127.0.0.1 only, on a free port the OS chooses; issuer http://127.0.0.1:<port>
//   stdout       exactly one line once listening: {"issuer": "http://127.0.0.1:N", "port": N}
//                (everything else, the library's notices included, goes to stderr)
//   exits        when stdin closes (so a killed pytest never leaves it running) or on SIGTERM
//
// Authorization code flow only, PKCE (S256) required for every client, no refresh tokens.
// Signing keys (RS256 and ES256) are generated at start; clients get RS256 id_tokens.
// Scopes openid email profile; the id_token itself carries email, email_verified, name and
// preferred_username (conformIdTokenClaims: false).
//
// Accounts: any login name signs in, with any password.
//   sub             "sub-" + the first 16 hex digits of sha256(login)
//   email           the login lower-cased when it contains "@", else login + "@example.test"
//   email_verified  false when the login starts with "unverified", else true
//   name            "Test " + the part of the login before "@"
//
// Pages (our own, no scripts and nothing fetched from elsewhere):
//   GET  /interaction/<uid>        login: heading "Sign in", fields labelled "Login" (name=login)
//                                  and "Password" (name=password), button "Sign in";
//                                  consent: heading "Authorize", button "Continue";
//                                  both: link "Cancel" -> /interaction/<uid>/abort
//   POST /interaction/<uid>        the form submission (prompt=login|consent)
//   GET  /interaction/<uid>/abort  finishes the interaction with error=access_denied
//
// Test controls (POST, JSON body, answer 204; the server listens on loopback only):
//   /__test/tamper  {"mode": "signature" | "none" | null}  while set, the token endpoint's
//                   id_token is altered: "signature" flips a character of its signature, so it
//                   no longer verifies; "none" re-encodes it unsigned (alg "none", empty
//                   signature); null stops tampering.
//   /__test/down    {"down": true | false}  while down, every other path answers 503 (the
//                   provider being down); the controls keep working.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';

// The library prints notices with console.info (stdout): stdout is for the one JSON line.
console.info = (...args) => console.error(...args);
console.log = (...args) => console.error(...args);

const clients = JSON.parse(process.env.OIDC_CLIENTS ?? '[]').map((client) => ({
  client_id: client.client_id,
  client_secret: client.client_secret,
  redirect_uris: client.redirect_uris,
  token_endpoint_auth_method: client.token_endpoint_auth_method ?? 'client_secret_basic',
  grant_types: ['authorization_code'],
  response_types: ['code'],
}));

const state = { tamper: null, down: false };

function signingKey(alg) {
  const { privateKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    ...privateKey.export({ format: 'jwk' }),
    alg,
    use: 'sig',
    kid: `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`,
  };
}

function account(login) {
  const hash = crypto.createHash('sha256').update(login).digest('hex');
  const local = login.split('@')[0];
  return {
    sub: `sub-${hash.slice(0, 16)}`,
    email: login.includes('@') ? login.toLowerCase() : `${login}@example.test`,
    email_verified: !login.startsWith('unverified'),
    name: `Test ${local}`,
    preferred_username: login,
  };
}

// accountId is the login itself, so findAccount works for any name.
async function findAccount(_ctx, id) {
  const claims = account(id);
  return { accountId: id, claims: async () => claims };
}

function escapeHtml(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body, abortUrl) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font-family:sans-serif;max-width:22rem;margin:3rem auto}
label,input,button{display:block;margin:.4rem 0}input,button{box-sizing:border-box;width:100%;padding:.4rem}</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
<p><a href="${escapeHtml(abortUrl)}">Cancel</a></p>
</body>
</html>`;
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

function b64urlJson(value) {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

function tampered(idToken, mode) {
  const [header, payload, signature] = idToken.split('.');
  if (mode === 'none') {
    const decoded = JSON.parse(Buffer.from(header, 'base64url').toString('utf8'));
    return `${b64urlJson({ ...decoded, alg: 'none' })}.${payload}.`;
  }
  // Flip the first character: a change near the end can fall on padding bits and decode the
  // same.
  const flipped = (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1);
  return `${header}.${payload}.${flipped}`;
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;

  const provider = new Provider(issuer, {
    clients,
    findAccount,
    jwks: { keys: [signingKey('RS256'), signingKey('ES256')] },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    scopes: ['openid', 'email', 'profile'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
    },
    conformIdTokenClaims: false,
    pkce: { methods: ['S256'], required: () => true },
    issueRefreshToken: async () => false,
    features: { devInteractions: { enabled: false } },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Error</title>
</head><body><h1>Error</h1><pre>${escapeHtml(JSON.stringify(out, null, 2))}</pre></body></html>`;
    },
  });

  const tokenPath = new URL(provider.urlFor('token')).pathname;

  // Runs around the library's routes: after the token endpoint has set its JSON body.
  provider.use(async (ctx, next) => {
    await next();
    const body = ctx.body;
    if (state.tamper && ctx.path === tokenPath && ctx.status === 200 && body?.id_token) {
      ctx.body = { ...body, id_token: tampered(body.id_token, state.tamper) };
    }
  });

  // The login and consent pages.
  provider.use(async (ctx, next) => {
    const match = /^\/interaction\/([^/]+)(\/abort)?$/.exec(ctx.path);
    if (!match) {
      await next();
      return;
    }
    const [, uid, abort] = match;
    ctx.set('Cache-Control', 'no-store');
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== uid) ctx.throw(400, 'interaction mismatch');
    const abortUrl = `/interaction/${uid}/abort`;
    const finish = async (result, merge) => {
      const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
        mergeWithLastSubmission: merge,
      });
      ctx.status = 303;
      ctx.redirect(returnTo);
    };

    if (abort && ctx.method === 'GET') {
      await finish({ error: 'access_denied', error_description: 'End-User aborted interaction' }, false);
      return;
    }
    if (abort) ctx.throw(405);

    const { prompt, params, session } = details;
    if (ctx.method === 'GET') {
      ctx.type = 'html';
      ctx.set('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'");
      if (prompt.name === 'login') {
        ctx.body = page('Sign in', `<form method="post" action="/interaction/${escapeHtml(uid)}" autocomplete="off">
<input type="hidden" name="prompt" value="login">
<label for="login">Login</label>
<input id="login" type="text" name="login" required value="${escapeHtml(params.login_hint)}">
<label for="password">Password</label>
<input id="password" type="password" name="password" required>
<button type="submit">Sign in</button>
</form>`, abortUrl);
      } else if (prompt.name === 'consent') {
        const client = await provider.Client.find(params.client_id);
        ctx.body = page('Authorize', `<p><strong id="client">${escapeHtml(client?.clientId)}</strong>
asks for: <span id="scopes">${escapeHtml(params.scope)}</span></p>
<form method="post" action="/interaction/${escapeHtml(uid)}">
<input type="hidden" name="prompt" value="consent">
<button type="submit">Continue</button>
</form>`, abortUrl);
      } else {
        ctx.throw(501, `prompt ${prompt.name} is not implemented`);
      }
      return;
    }
    if (ctx.method !== 'POST') ctx.throw(405);

    const form = await readForm(ctx.req);
    if (form.get('prompt') === 'login' && prompt.name === 'login') {
      const login = (form.get('login') ?? '').trim();
      if (!login) ctx.throw(400, 'login is required');
      await finish({ login: { accountId: login } }, false);
    } else if (form.get('prompt') === 'consent' && prompt.name === 'consent') {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
      if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
      if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      await finish({ consent: { grantId: await grant.save() } }, true);
    } else {
      ctx.throw(400, 'unexpected prompt');
    }
  });

  const app = provider.callback();
  server.on('request', async (req, res) => {
    const path = new URL(req.url, issuer).pathname;
    if (path.startsWith('/__test/')) {
      try {
        if (req.method !== 'POST') throw new Error('POST only');
        const body = await readJson(req);
        if (path === '/__test/tamper') {
          if (![null, undefined, 'signature', 'none'].includes(body.mode)) {
            throw new Error(`unknown tamper mode ${body.mode}`);
          }
          state.tamper = body.mode ?? null;
        } else if (path === '/__test/down') {
          state.down = Boolean(body.down);
        } else {
          res.writeHead(404).end();
          return;
        }
        res.writeHead(204).end();
      } catch (error) {
        res.writeHead(400, { 'Content-Type': 'text/plain' }).end(String(error));
      }
      return;
    }
    if (state.down) {
      res.writeHead(503, { 'Content-Type': 'application/json', 'Retry-After': '1' });
      res.end(JSON.stringify({ error: 'temporarily_unavailable' }));
      return;
    }
    app(req, res);
  });

  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

// Exit with the parent: stdin is a pipe from pytest, and closes when pytest dies.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
