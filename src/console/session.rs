//! Console sessions: who is signed in, kept in memory and ended by idleness, sign-out, the
//! key's revocation or a restart.
//!
//! The session id travels only in an `HttpOnly`, `SameSite=Strict` cookie scoped to `/console`;
//! the table holds its blake3 hash, so the map itself yields no usable cookie. The API key is
//! checked once at sign-in and never kept: the session remembers the key's id and asks the
//! store on every request whether it is still live.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};

use crate::api::AppState;
use crate::tenants::KeyPrincipal;

/// The session cookie's name.
pub const COOKIE: &str = "tally_console";

/// A message shown once, on the next page the operator sees (the result of an action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// Whether it reports a failure.
    pub is_error: bool,
    /// What to say.
    pub text: String,
}

#[derive(Debug, Clone)]
struct Session {
    principal: KeyPrincipal,
    csrf: String,
    last_seen_ms: i64,
    flash: Option<Flash>,
}

/// Every live session, bounded by `console.max_sessions`.
#[derive(Debug, Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

/// A fresh random token, hex-encoded (session ids, CSRF tokens, idempotency keys).
pub fn random_token() -> String {
    let mut bytes = [0u8; 24];
    // Without randomness no session can be made safely; a constant would be guessable, so the
    // token is left empty and every check against it fails.
    if getrandom::fill(&mut bytes).is_err() {
        return String::new();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash(id: &str) -> [u8; 32] {
    *blake3::hash(id.as_bytes()).as_bytes()
}

impl Sessions {
    /// Starts a session for a principal; returns the cookie value (the session id), or `None`
    /// when the table is full of other tenants' live sessions.
    ///
    /// A full table first drops idle sessions, then the least recently used session of the same
    /// key, then of the same tenant. It never ends another tenant's live session: signing in
    /// repeatedly with one tenant's key cannot sign another tenant's operators out.
    pub fn create(
        &self,
        principal: KeyPrincipal,
        now_ms: i64,
        idle_ms: i64,
        max_sessions: usize,
    ) -> Option<String> {
        let id = random_token();
        let mut map = self.lock();
        if map.len() >= max_sessions.max(1) {
            map.retain(|_, s| now_ms.saturating_sub(s.last_seen_ms) <= idle_ms);
        }
        while map.len() >= max_sessions.max(1) {
            let oldest = |same: &dyn Fn(&Session) -> bool| {
                map.iter()
                    .filter(|(_, s)| same(s))
                    .min_by_key(|(_, s)| s.last_seen_ms)
                    .map(|(k, _)| *k)
            };
            let victim = oldest(&|s| s.principal.key_id == principal.key_id)
                .or_else(|| oldest(&|s| s.principal.tenant == principal.tenant));
            match victim {
                Some(k) => map.remove(&k),
                None => return None,
            };
        }
        map.insert(
            hash(&id),
            Session {
                principal,
                csrf: random_token(),
                last_seen_ms: now_ms,
                flash: None,
            },
        );
        Some(id)
    }

    /// Ends a session (sign-out).
    pub fn remove(&self, id: &str) {
        self.lock().remove(&hash(id));
    }

    /// The live session with this id, refreshed; `None` when unknown or idle too long.
    fn touch(&self, id: &str, now_ms: i64, idle_ms: i64) -> Option<Session> {
        let mut map = self.lock();
        let key = hash(id);
        let session = map.get_mut(&key)?;
        if now_ms.saturating_sub(session.last_seen_ms) > idle_ms {
            map.remove(&key);
            return None;
        }
        session.last_seen_ms = now_ms;
        Some(session.clone())
    }

    /// Leaves a message for the session's next page.
    pub fn set_flash(&self, id: &str, flash: Flash) {
        if let Some(s) = self.lock().get_mut(&hash(id)) {
            s.flash = Some(flash);
        }
    }

    /// Takes the pending message, if any (shown once).
    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        self.lock().get_mut(&hash(id)).and_then(|s| s.flash.take())
    }

    /// How many sessions are live (idle ones are dropped lazily).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding the lock cannot leave a half-updated entry (every update is a
        // single assignment), so a poisoned map is still consistent.
        self.by_hash.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A signed-in operator: the extractor every console page and action takes.
#[derive(Clone)]
pub struct Operator {
    /// Who the session speaks for.
    pub principal: KeyPrincipal,
    /// The session's CSRF token, put into every form.
    pub csrf: String,
    /// The session id (to leave or take a flash message).
    pub session_id: String,
    /// The message left by the previous action, taken when this request began.
    pub flash: Option<Flash>,
    /// The tenant's name, shown in the header.
    pub tenant_name: String,
    /// The shared state (sessions, the API router).
    pub state: Arc<AppState>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("principal", &self.principal)
            .field("tenant_name", &self.tenant_name)
            .finish_non_exhaustive()
    }
}

impl Operator {
    /// Whether the operator may only look.
    pub fn read_only(&self) -> bool {
        self.principal.read_only
    }

    /// Leaves a message for the next page.
    pub fn flash(&self, is_error: bool, text: impl Into<String>) {
        self.state.console.sessions.set_flash(
            &self.session_id,
            Flash {
                is_error,
                text: text.into(),
            },
        );
    }
}

/// The session cookie's value, if the request has one.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The `Set-Cookie` value for a session (or, with an empty id, one that clears it).
pub fn set_cookie(state: &AppState, headers: &HeaderMap, name: &str, id: &str) -> HeaderValue {
    let forwarded_tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let secure = if state.config.console.secure_cookie || forwarded_tls {
        "; Secure"
    } else {
        ""
    };
    let expiry = if id.is_empty() { "; Max-Age=0" } else { "" };
    let text = format!("{name}={id}; Path=/console; HttpOnly; SameSite=Strict{secure}{expiry}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Sends the browser to sign in, remembering the page it asked for.
pub fn to_sign_in(next: &str) -> Response {
    let mut target = String::from("/console/sign-in");
    if is_console_path(next) && next != "/console/sign-in" && next != "/console" {
        target.push_str("?next=");
        target.extend(form_urlencoded::byte_serialize(next.as_bytes()));
    }
    Redirect::to(&target).into_response()
}

/// Whether `path` is a console path on this server (safe to redirect to after sign-in).
pub fn is_console_path(path: &str) -> bool {
    (path == "/console" || path.starts_with("/console/") || path.starts_with("/console?"))
        && !path.contains("//")
        && !path.contains('\\')
        && path.len() <= 2048
        && path.bytes().all(|b| (0x21..0x7f).contains(&b))
}

impl FromRequestParts<Arc<AppState>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let next = if parts.method == axum::http::Method::GET {
            // Inside the nested router the URI has lost its `/console` prefix; the original
            // keeps it.
            parts
                .extensions
                .get::<axum::extract::OriginalUri>()
                .map(|o| &o.0)
                .unwrap_or(&parts.uri)
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let Some(id) = cookie_value(&parts.headers, COOKIE) else {
            return Err(to_sign_in(&next));
        };
        let now_ms = crate::clock::now_ms();
        let idle_ms = i64::try_from(state.config.console.session_idle_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        let sessions = &state.console.sessions;
        let Some(session) = sessions.touch(&id, now_ms, idle_ms) else {
            return Err(to_sign_in(&next));
        };
        let (live, tenant_name) = key_is_live(state, &session.principal)
            .map_err(|e| super::page::ConsoleError::from(e).into_response())?;
        if !live {
            sessions.remove(&id);
            return Err(to_sign_in(&next));
        }
        let flash = if parts.method == axum::http::Method::GET {
            sessions.take_flash(&id)
        } else {
            None
        };
        Ok(Operator {
            principal: session.principal,
            csrf: session.csrf,
            session_id: id,
            flash,
            tenant_name,
            state: Arc::clone(state),
        })
    }
}

/// Whether the session's key still authenticates (a revoked key ends its sessions at once),
/// with the tenant's name.
fn key_is_live(
    state: &AppState,
    principal: &KeyPrincipal,
) -> Result<(bool, String), crate::store::StoreError> {
    let tx = state.store.read()?;
    let live = crate::tenants::key_by_id(&tx, principal.key_id)?
        .is_some_and(|k| k.revoked_at_ms.is_none() && k.tenant == principal.tenant.0);
    let name = crate::tenants::tenant_name(&tx, principal.tenant)?.unwrap_or_default();
    Ok((live, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> KeyPrincipal {
        KeyPrincipal {
            tenant: crate::store::TenantId(1),
            key_id: crate::id::Id::generate(),
            read_only: false,
        }
    }

    #[test]
    fn sessions_end_when_idle_and_are_bounded() {
        let sessions = Sessions::default();
        let one = principal();
        let a = sessions.create(one, 0, 5_000, 2).expect("room");
        assert!(sessions.touch(&a, 1_000, 5_000).is_some());
        assert!(sessions.touch(&a, 7_000, 5_000).is_none(), "idle too long");
        assert!(
            sessions.touch(&a, 7_001, 5_000).is_none(),
            "and gone for good"
        );
        let b = sessions.create(one, 10, 5_000, 2).expect("room");
        let c = sessions.create(one, 20, 5_000, 2).expect("room");
        let d = sessions
            .create(one, 30, 5_000, 2)
            .expect("the key's oldest ends");
        assert_eq!(sessions.len(), 2);
        assert!(
            sessions.touch(&b, 31, 5_000).is_none(),
            "least recently used ended"
        );
        assert!(sessions.touch(&c, 31, 5_000).is_some());
        assert!(sessions.touch(&d, 31, 5_000).is_some());
    }

    #[test]
    fn another_tenants_sign_ins_never_end_a_live_session() {
        let sessions = Sessions::default();
        let ours = principal();
        let theirs = KeyPrincipal {
            tenant: crate::store::TenantId(2),
            ..principal()
        };
        let a = sessions.create(ours, 0, 5_000, 1).expect("room");
        assert_eq!(sessions.create(theirs, 10, 5_000, 1), None, "full of ours");
        assert!(sessions.touch(&a, 20, 5_000).is_some(), "ours still live");
        assert!(
            sessions.create(theirs, 9_000, 5_000, 1).is_some(),
            "an idle session makes room"
        );
    }

    #[test]
    fn only_console_paths_are_followed_after_sign_in() {
        assert!(is_console_path("/console/invoices/inv_1?x=1"));
        assert!(is_console_path("/console"));
        assert!(!is_console_path("//evil.example/console"));
        assert!(!is_console_path("/console//evil.example"));
        assert!(!is_console_path("https://evil.example/console"));
        assert!(!is_console_path("/consolex"));
        assert!(!is_console_path("/v1/customers"));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tally_console=abc; b=2"),
        );
        assert_eq!(cookie_value(&headers, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie_value(&headers, "c"), None);
    }
}
