//! Logins, sessions and CSRF tokens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::view::{self, Form, Page};
use super::{App, Role};

/// The session cookie's name.
const COOKIE: &str = "relaysync_session";
/// A session unused this long ends.
const IDLE: Duration = Duration::from_secs(8 * 3600);

/// A logged-in user's session.
pub(crate) struct Session {
    user: String,
    role: Role,
    csrf: String,
    seen: Instant,
}

/// The user of a request; a request without a live session is sent to
/// the login page.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) csrf: String,
}

/// 32 random bytes, URL-safe base64.
fn token() -> String {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// Equal strings, compared in time that does not depend on where they
/// differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl FromRequestParts<Arc<App>> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<User, Response> {
        let id = session_id(&parts.headers);
        let mut sessions = app.sessions.lock().expect("sessions");
        sessions.retain(|_, s| s.seen.elapsed() < IDLE);
        match id.and_then(|id| sessions.get_mut(&id)) {
            Some(s) => {
                s.seen = Instant::now();
                Ok(User {
                    name: s.user.clone(),
                    role: s.role,
                    csrf: s.csrf.clone(),
                })
            }
            None => Err(Redirect::to("/login").into_response()),
        }
    }
}

impl User {
    /// The refusal (403) of a request whose form lacks this session's CSRF
    /// token, or of a viewer's; None when the action may go ahead.
    pub(crate) fn refusal(&self, form: &Form) -> Option<Response> {
        let token = form.get("csrf").unwrap_or_default();
        if !same(token, &self.csrf) {
            return Some(view::refused(
                "this form is missing its security token (CSRF) or is from an ended session: open the page again and resend",
            ));
        }
        if self.role != Role::Operator {
            return Some(view::refused(&format!(
                "{} is a viewer: only operators may trigger actions (relaysync console user add {} --role operator)",
                self.name, self.name
            )));
        }
        None
    }
}

#[derive(askama::Template)]
#[template(path = "console/login.html")]
struct Login {
    error: Option<String>,
    title: &'static str,
}

pub(crate) async fn login_page(State(app): State<Arc<App>>) -> Response {
    Page(Login {
        error: None,
        title: view::title(app.side),
    })
    .into_response()
}

pub(crate) async fn login(State(app): State<Arc<App>>, form: Form) -> Response {
    let name = form.get("name").unwrap_or_default().to_string();
    let password = form.get("password").unwrap_or_default().to_string();
    let users = app.users.clone();
    let checked =
        tokio::task::spawn_blocking(move || users.check(&name, &password).map(|r| (name, r)))
            .await
            .expect("password check");
    let (name, role) = match checked {
        Ok((name, Some(role))) => (name, role),
        Ok((_, None)) => {
            tracing::warn!("console: a login failed");
            let mut page = Page(Login {
                error: Some("wrong name or password".into()),
                title: view::title(app.side),
            })
            .into_response();
            *page.status_mut() = StatusCode::UNAUTHORIZED;
            return page;
        }
        Err(e) => return view::failed(&e),
    };
    let id = token();
    app.sessions.lock().expect("sessions").insert(
        id.clone(),
        Session {
            user: name.clone(),
            role,
            csrf: token(),
            seen: Instant::now(),
        },
    );
    tracing::info!(user = %name, role = role.as_str(), "console: logged in");
    let secure = if app.secure { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}");
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("cookie"),
    );
    response
}

pub(crate) async fn logout(
    State(app): State<Arc<App>>,
    user: User,
    headers: HeaderMap,
    form: Form,
) -> Response {
    if !same(form.get("csrf").unwrap_or_default(), &user.csrf) {
        return view::refused(
            "this form is missing its security token (CSRF): open the page again",
        );
    }
    if let Some(id) = session_id(&headers) {
        app.sessions.lock().expect("sessions").remove(&id);
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "relaysync_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}
