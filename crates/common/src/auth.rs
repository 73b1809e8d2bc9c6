//! Optional user accounts: Supabase access tokens, verified on every request
//! by one middleware that both services install. It puts the [`Caller`] into
//! the request's extensions — the token's `sub`, or anonymous — so handlers
//! can scope sessions and jobs to their owner and the rate limits can count
//! per user.
//!
//! `AUTH_MODE=off` (the default) never looks at tokens: the session or job id
//! is the capability, as before accounts. `optional` lets anonymous calls
//! through but refuses a bad token; `required` refuses calls without a valid
//! token except on the public paths (health, readiness, metrics, the OpenAPI
//! document, and what a service adds, such as canvas-service's object files).

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};
use serde::Deserialize;

use crate::{
    ApiError,
    caller::Caller,
    config::{ConfigError, Env},
};

/// `AUTH_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Tokens are ignored; every caller is anonymous.
    Off,
    /// Anonymous calls work; a token, when sent, must be valid.
    Optional,
    /// Every API call needs a valid token.
    Required,
}

/// How tokens are checked, read once at start-up.
#[derive(Clone)]
pub struct AuthSettings {
    pub mode: AuthMode,
    /// `SUPABASE_URL` without a trailing slash: the JWKS is at
    /// `<url>/auth/v1/.well-known/jwks.json` and tokens' `iss` must be
    /// `<url>/auth/v1`.
    pub supabase_url: Option<String>,
    /// `SUPABASE_JWT_SECRET`: the HS256 secret of a legacy project.
    pub jwt_secret: Option<String>,
    /// `AUTH_AUDIENCE` (default `authenticated`): the `aud` a token must carry.
    pub audience: String,
    /// `AUTH_JWKS_REFRESH_SECONDS` (default 60, not documented: for tests):
    /// the shortest time between two JWKS fetches.
    pub jwks_refresh: Duration,
}

/// The secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("mode", &self.mode)
            .field("supabase_url", &self.supabase_url)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<set>"))
            .field("audience", &self.audience)
            .field("jwks_refresh", &self.jwks_refresh)
            .finish()
    }
}

impl AuthSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mode = match env.lookup(&["AUTH_MODE"]) {
            None => AuthMode::Off,
            Some((name, raw)) => match raw.to_ascii_lowercase().as_str() {
                "off" => AuthMode::Off,
                "optional" => AuthMode::Optional,
                "required" => AuthMode::Required,
                _ => {
                    return Err(ConfigError::new(
                        name,
                        format!("{raw:?} is not a mode (use off, optional or required)"),
                    ));
                }
            },
        };
        let supabase_url = env
            .string(&["SUPABASE_URL"])
            .map(|url| url.trim_end_matches('/').to_owned());
        let jwt_secret = env.string(&["SUPABASE_JWT_SECRET"]);
        if mode != AuthMode::Off {
            if supabase_url.is_none() && jwt_secret.is_none() {
                return Err(ConfigError::new(
                    "AUTH_MODE",
                    "accounts need SUPABASE_URL (tokens checked against the project's JWKS) or SUPABASE_JWT_SECRET (legacy HS256 projects)",
                ));
            }
            if let Some(url) = &supabase_url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return Err(ConfigError::new(
                    "SUPABASE_URL",
                    format!("{url:?} must start with https:// (or http://)"),
                ));
            }
        }
        Ok(Self {
            mode,
            supabase_url,
            jwt_secret,
            audience: env
                .string(&["AUTH_AUDIENCE"])
                .unwrap_or_else(|| "authenticated".to_owned()),
            jwks_refresh: Duration::from_secs(env.parse_or(&["AUTH_JWKS_REFRESH_SECONDS"], 60)?),
        })
    }

    /// The `iss` of the project's tokens.
    pub fn issuer(&self) -> Option<String> {
        self.supabase_url
            .as_ref()
            .map(|url| format!("{url}/auth/v1"))
    }

    pub fn jwks_url(&self) -> Option<String> {
        self.supabase_url
            .as_ref()
            .map(|url| format!("{url}/auth/v1/.well-known/jwks.json"))
    }
}

/// The authenticator could not be built (start-up only).
#[derive(Debug, thiserror::Error)]
#[error("auth: {0}")]
pub struct AuthError(String);

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is not valid: 401 with this text.
    #[error("{0}")]
    Invalid(&'static str),
    /// The signing keys could not be had, so no token signed with them can
    /// be checked: 503, the cause only in the log.
    #[error("auth keys unavailable: {0}")]
    KeysUnavailable(String),
}

impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Invalid(detail) => ApiError::unauthorized(detail),
            TokenError::KeysUnavailable(cause) => {
                tracing::warn!(error = %cause, "auth keys (JWKS) unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "auth keys (JWKS) are unavailable, try again shortly",
                )
                .retry_after(5)
            }
        }
    }
}

/// The claims this service reads; `exp`, `nbf`, `iss` and `aud` are checked
/// by the JWT library.
#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// Checks Supabase access tokens: ES256 and RS256 against the project's JWKS,
/// HS256 against the legacy secret. No other algorithm is accepted — `none`
/// included, and HS256 is never tried with a JWKS key.
pub struct TokenVerifier {
    audience: String,
    issuer: Option<String>,
    secret: Option<DecodingKey>,
    jwks: Option<Jwks>,
}

impl TokenVerifier {
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthError> {
        let secret = settings
            .jwt_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.as_bytes()))
            .transpose()
            .map_err(|e| AuthError(format!("SUPABASE_JWT_SECRET: {e}")))?;
        let jwks = match settings.jwks_url() {
            Some(url) => Some(Jwks::new(url, settings.jwks_refresh)?),
            None => None,
        };
        Ok(Self {
            audience: settings.audience.clone(),
            issuer: settings.issuer(),
            secret,
            jwks,
        })
    }

    /// The token's `sub` when it is valid now.
    pub async fn verify(&self, token: &str) -> Result<String, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenError::Invalid("Invalid access token"))?;
        let key = match header.alg {
            Algorithm::HS256 => self
                .secret
                .clone()
                .ok_or(TokenError::Invalid("Access token algorithm not accepted"))?,
            Algorithm::ES256 | Algorithm::RS256 => {
                let jwks = self
                    .jwks
                    .as_ref()
                    .ok_or(TokenError::Invalid("Access token algorithm not accepted"))?;
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or(TokenError::Invalid("Access token has no key id"))?;
                jwks.key(kid, header.alg).await?
            }
            _ => return Err(TokenError::Invalid("Access token algorithm not accepted")),
        };
        let mut validation = Validation::new(header.alg);
        // Clock skew between Supabase and this host.
        validation.leeway = 30;
        validation.validate_nbf = true;
        validation.set_audience(&[&self.audience]);
        let mut required = vec!["exp", "sub", "aud"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            TokenError::Invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "Access token expired",
                ErrorKind::ImmatureSignature => "Access token not valid yet",
                ErrorKind::InvalidAudience => "Access token is for another audience",
                ErrorKind::InvalidIssuer => "Access token is from another issuer",
                _ => "Invalid access token",
            })
        })?;
        if data.claims.sub.is_empty() {
            return Err(TokenError::Invalid("Access token has no subject"));
        }
        Ok(data.claims.sub)
    }
}

/// The project's signing keys, fetched on first use and cached by `kid`. A
/// token with an unknown `kid` (the project rotated its keys) triggers one
/// refetch, at most once per `refresh`, so forged key ids cannot make this
/// service hammer Supabase.
struct Jwks {
    url: String,
    client: reqwest::Client,
    refresh: Duration,
    keys: RwLock<HashMap<String, (Algorithm, DecodingKey)>>,
    /// Held while fetching: concurrent requests wait for one fetch.
    fetching: tokio::sync::Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_failed: bool,
}

/// A JWKS is a few keys; anything this large is not one.
const MAX_JWKS_BYTES: usize = 256 * 1024;

impl Jwks {
    fn new(url: String, refresh: Duration) -> Result<Self, AuthError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| AuthError(format!("HTTP client for the JWKS: {e}")))?;
        Ok(Self {
            url,
            client,
            refresh,
            keys: RwLock::default(),
            fetching: tokio::sync::Mutex::default(),
        })
    }

    /// The cached key `kid`, if it signs with `alg`. A known key used with
    /// another algorithm is refused outright.
    fn cached(&self, kid: &str, alg: Algorithm) -> Result<Option<DecodingKey>, TokenError> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        match keys.get(kid) {
            Some((key_alg, key)) if *key_alg == alg => Ok(Some(key.clone())),
            Some(_) => Err(TokenError::Invalid(
                "Access token algorithm does not match its key",
            )),
            None => Ok(None),
        }
    }

    fn is_empty(&self) -> bool {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    async fn key(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, TokenError> {
        if let Some(key) = self.cached(kid, alg)? {
            return Ok(key);
        }
        let mut state = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.cached(kid, alg)? {
            return Ok(key);
        }
        // After a failure, retry sooner: no key may be cached at all.
        let wait = if state.last_failed {
            self.refresh.min(Duration::from_secs(5))
        } else {
            self.refresh
        };
        if state.last_attempt.is_none_or(|at| at.elapsed() >= wait) {
            state.last_attempt = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => {
                    state.last_failed = false;
                    tracing::info!(keys = keys.len(), "auth keys (JWKS) fetched");
                    // Replaced whole: a key the project removed stops working.
                    *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
                }
                Err(cause) => {
                    state.last_failed = true;
                    return Err(TokenError::KeysUnavailable(cause));
                }
            }
        } else if state.last_failed && self.is_empty() {
            return Err(TokenError::KeysUnavailable(
                "the last JWKS fetch failed".to_owned(),
            ));
        }
        drop(state);
        self.cached(kid, alg)?
            .ok_or(TokenError::Invalid("Access token signed by an unknown key"))
    }

    async fn fetch(&self) -> Result<HashMap<String, (Algorithm, DecodingKey)>, String> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("GET {}: {e}", self.url))?;
        if response
            .content_length()
            .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("{}: JWKS too large", self.url));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("GET {}: {e}", self.url))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("{}: JWKS too large", self.url));
        }
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let set: Set =
            serde_json::from_slice(&body).map_err(|e| format!("{}: not a JWKS: {e}", self.url))?;
        let mut keys = HashMap::new();
        // One key this library cannot read must not cost the others.
        for value in set.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            if let Some((kid, alg, key)) = accepted_key(&jwk) {
                keys.insert(kid, (alg, key));
            }
        }
        Ok(keys)
    }
}

/// A JWKS entry this service accepts: a signing key with an id, P-256 for
/// ES256 or RSA for RS256.
fn accepted_key(jwk: &Jwk) -> Option<(String, Algorithm, DecodingKey)> {
    let kid = jwk.common.key_id.clone()?;
    if matches!(
        jwk.common.public_key_use,
        Some(ref usage) if *usage != PublicKeyUse::Signature
    ) {
        return None;
    }
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, alg, key))
}

/// Paths every service serves to anyone, token or not, in every mode.
const PUBLIC_PATHS: &[&str] = &[
    "/",
    "/health",
    "/api/v1/health",
    "/ready",
    "/metrics",
    "/openapi.json",
];

type PublicRule = Box<dyn Fn(&Method, &str) -> bool + Send + Sync>;

/// The mode, the verifier, and which requests need no account.
pub struct Authenticator {
    mode: AuthMode,
    verifier: Option<TokenVerifier>,
    public: PublicRule,
}

impl Authenticator {
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthError> {
        Ok(Self {
            mode: settings.mode,
            verifier: match settings.mode {
                AuthMode::Off => None,
                AuthMode::Optional | AuthMode::Required => Some(TokenVerifier::new(settings)?),
            },
            public: Box::new(|_, _| false),
        })
    }

    /// Adds the service's own public requests (beside health, readiness,
    /// metrics and the OpenAPI document): they are never authenticated, and
    /// their caller is anonymous.
    pub fn with_public(
        mut self,
        rule: impl Fn(&Method, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.public = Box::new(rule);
        self
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    fn is_public(&self, method: &Method, path: &str) -> bool {
        // Preflights never carry credentials (the CORS layer answers them
        // before this one; this covers a bare OPTIONS).
        *method == Method::OPTIONS || PUBLIC_PATHS.contains(&path) || (self.public)(method, path)
    }

    /// Who is calling, or why the request is refused.
    pub async fn caller(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        let Some(verifier) = &self.verifier else {
            return Ok(Caller::ANONYMOUS);
        };
        if self.is_public(method, path) {
            return Ok(Caller::ANONYMOUS);
        }
        match bearer(headers)? {
            Some(token) => Ok(Caller {
                user_id: Some(verifier.verify(token).await?),
            }),
            None if self.mode == AuthMode::Required => Err(ApiError::unauthorized(
                "Sign in: this API needs an access token",
            )),
            None => Ok(Caller::ANONYMOUS),
        }
    }
}

/// The token of `Authorization: Bearer <token>`; `None` without the header.
/// Any other use of the header is refused rather than ignored.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || ApiError::unauthorized("Authorization must be `Bearer <access token>`");
    let value = value.to_str().map_err(|_| malformed())?.trim();
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(Some(token))
}

/// The middleware: inserts the [`Caller`] into every request it lets
/// through; answers 401 (with `WWW-Authenticate: Bearer`) or 503 otherwise.
pub async fn middleware(
    State(auth): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    match auth
        .caller(request.method(), request.uri().path(), request.headers())
        .await
    {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => {
            let unauthorized = error.status() == StatusCode::UNAUTHORIZED;
            let invalid = request.headers().contains_key(header::AUTHORIZATION);
            let mut response = error.into_response();
            if unauthorized {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(if invalid {
                        "Bearer error=\"invalid_token\""
                    } else {
                        "Bearer"
                    }),
                );
            }
            response
        }
    }
}

/// Installs the middleware on a service's routes. Put it inside the shared
/// middleware (`common::http::with_middleware` adds CORS outermost), so a
/// 401 carries CORS headers and preflights never need a token.
pub fn layer<S>(router: Router<S>, auth: Arc<Authenticator>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(axum::middleware::from_fn_with_state(auth, middleware))
}

/// Handlers take the caller as an argument. Missing only when the layer was
/// not installed: a bug, answered 500 rather than treated as anonymous.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::internal("no Caller in the request: common::auth::layer is not installed")
        })
    }
}

/// The `bearer` security scheme (a Supabase access token) in a service's
/// OpenAPI document, optional on every operation that declares no security
/// of its own (`AUTH_MODE` decides whether it is needed at run time).
pub struct BearerSecurity;

impl utoipa::Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .description(Some(
                            "A Supabase access token. Needed when AUTH_MODE=required; with optional, anonymous calls work too.",
                        ))
                        .build(),
                ),
            );
        openapi.security = Some(vec![
            SecurityRequirement::default(),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_modes_parse() {
        let settings = AuthSettings::from_env(&Env::default()).unwrap();
        assert_eq!(settings.mode, AuthMode::Off);
        assert_eq!(settings.audience, "authenticated");
        assert_eq!(settings.jwks_refresh, Duration::from_secs(60));
        let settings = AuthSettings::from_env(&Env::from_pairs([
            ("AUTH_MODE", "Required"),
            ("SUPABASE_URL", "https://abc.supabase.co/"),
        ]))
        .unwrap();
        assert_eq!(settings.mode, AuthMode::Required);
        assert_eq!(
            settings.issuer().as_deref(),
            Some("https://abc.supabase.co/auth/v1")
        );
        assert_eq!(
            settings.jwks_url().as_deref(),
            Some("https://abc.supabase.co/auth/v1/.well-known/jwks.json")
        );
        let settings = AuthSettings::from_env(&Env::from_pairs([
            ("AUTH_MODE", "optional"),
            ("SUPABASE_JWT_SECRET", "s3cret"),
            ("AUTH_AUDIENCE", "api"),
        ]))
        .unwrap();
        assert_eq!(settings.mode, AuthMode::Optional);
        assert_eq!(settings.audience, "api");
        assert!(
            !format!("{settings:?}").contains("s3cret"),
            "secret in Debug"
        );
    }

    #[test]
    fn errors_name_the_variable() {
        let err = AuthSettings::from_env(&Env::from_pairs([("AUTH_MODE", "maybe")])).unwrap_err();
        assert_eq!(err.variable, "AUTH_MODE");
        for mode in ["optional", "required"] {
            let err = AuthSettings::from_env(&Env::from_pairs([("AUTH_MODE", mode)])).unwrap_err();
            assert_eq!(err.variable, "AUTH_MODE", "{mode} without keys");
        }
        let err = AuthSettings::from_env(&Env::from_pairs([
            ("AUTH_MODE", "optional"),
            ("SUPABASE_URL", "abc.supabase.co"),
        ]))
        .unwrap_err();
        assert_eq!(err.variable, "SUPABASE_URL");
        let err = AuthSettings::from_env(&Env::from_pairs([("AUTH_JWKS_REFRESH_SECONDS", "soon")]))
            .unwrap_err();
        assert_eq!(err.variable, "AUTH_JWKS_REFRESH_SECONDS");
        // Off ignores the Supabase settings (canvas reads SUPABASE_URL as a
        // deployment marker too).
        assert!(AuthSettings::from_env(&Env::from_pairs([("SUPABASE_URL", "not a url")])).is_ok());
    }

    #[test]
    fn bearer_header_forms() {
        let headers = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            h
        };
        assert_eq!(bearer(&HeaderMap::new()).unwrap(), None);
        assert_eq!(bearer(&headers("Bearer abc")).unwrap(), Some("abc"));
        assert_eq!(bearer(&headers("bearer  abc ")).unwrap(), Some("abc"));
        for bad in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "abc"] {
            assert_eq!(
                bearer(&headers(bad)).unwrap_err().status(),
                StatusCode::UNAUTHORIZED,
                "{bad}"
            );
        }
    }
}
