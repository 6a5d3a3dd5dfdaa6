"""Sign-in with outside identity providers (issue 19): GitHub, Google, GitLab and any OpenID
Connect provider.

providers.py reads which providers are configured (IDENTITY_PROVIDERS and the IDP_<ID>_*
variables); adapters.py builds one adapter per provider, the outbound OAuth2/OIDC client that
makes the authorization URL and turns an authorization code into a ProviderIdentity
(oidc.py for OpenID Connect issuers, github.py for GitHub's OAuth apps, http.py for the shared
HTTP client and its error mapping).
"""
