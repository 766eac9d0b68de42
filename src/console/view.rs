//! What every page shares: the frame (title, menu, user), forms, errors,
//! the stylesheet and script, the security headers.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::auth::User;
use crate::book::Side;
use crate::error::Error;

/// A rendered template as a response.
pub(crate) struct Page<T>(pub(crate) T);

impl<T: askama::Template> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        match self.0.render() {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::error!("console: rendering a page: {e}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be rendered",
                )
                    .into_response()
            }
        }
    }
}

/// The frame around a page: the console's title, its menu, the user.
pub(crate) struct Frame {
    pub(crate) title: &'static str,
    pub(crate) user: String,
    pub(crate) role: &'static str,
    pub(crate) csrf: String,
    /// Menu entries: (path, label, whether it is this page's).
    pub(crate) menu: Vec<(&'static str, &'static str, bool)>,
}

const HO_MENU: &[(&str, &str)] = &[
    ("/sites", "Sites"),
    ("/datasync", "Data Sync"),
    ("/sent", "Sent Data"),
    ("/events", "Event Log"),
    ("/verify", "Verify"),
    ("/doctor", "Doctor"),
    ("/audit", "Audit"),
];
const SITE_MENU: &[(&str, &str)] = &[
    ("/sync", "Synchronization"),
    ("/received", "Received Data"),
    ("/events", "Event Log"),
    ("/doctor", "Doctor"),
    ("/audit", "Audit"),
];

pub(crate) fn title(side: Side) -> &'static str {
    match side {
        Side::Ho => "relaysync · head office",
        Side::Site => "relaysync · site",
    }
}

impl Frame {
    pub(crate) fn new(side: Side, page: &'static str, user: &User) -> Frame {
        Frame {
            title: title(side),
            user: user.name.clone(),
            role: user.role.as_str(),
            csrf: user.csrf.clone(),
            menu: match side {
                Side::Ho => HO_MENU,
                Side::Site => SITE_MENU,
            }
            .iter()
            .map(|(path, label)| (*path, *label, *path == page))
            .collect(),
        }
    }

    pub(crate) fn operator(&self) -> bool {
        self.role == "operator"
    }
}

/// A page that says what went wrong and what to do.
#[derive(askama::Template)]
#[template(path = "console/message.html")]
struct Message<'a> {
    heading: &'a str,
    text: &'a str,
}

/// 403 with the reason.
pub(crate) fn refused(text: &str) -> Response {
    let mut r = Page(Message {
        heading: "Not allowed",
        text,
    })
    .into_response();
    *r.status_mut() = StatusCode::FORBIDDEN;
    r
}

/// 404 with the reason.
pub(crate) fn not_found(text: &str) -> Response {
    let mut r = Page(Message {
        heading: "Not found",
        text,
    })
    .into_response();
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

/// An error of a relaysync call: 400 for bad input, 503 for the
/// databases, with the error's own words (they name the fix).
pub(crate) fn failed(e: &Error) -> Response {
    let status = match e {
        Error::Config(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    tracing::warn!("console: {}", crate::error_chain(e));
    let text = crate::error_chain(e);
    let mut r = Page(Message {
        heading: "relaysync could not do that",
        text: &text,
    })
    .into_response();
    *r.status_mut() = status;
    r
}

/// A form body (`application/x-www-form-urlencoded`), repeated names kept.
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub(crate) fn parse(bytes: &[u8]) -> Form {
        Form(form_urlencoded::parse(bytes).into_owned().collect())
    }
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Form, Response> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Form::parse(&bytes))
    }
}

pub(crate) async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../templates/console/console.css"),
    )
}

pub(crate) async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../templates/console/console.js"),
    )
}

/// No framing, no inline script, no referrer, no caching of pages.
pub(crate) async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

/// A time for people: `YYYY-MM-DD HH:MM:SS` UTC, or `never`.
pub(crate) fn when(t: Option<std::time::SystemTime>) -> String {
    t.map_or("never".into(), crate::serialize::format_time)
}

/// A duration for people, to the second.
pub(crate) fn span(d: std::time::Duration) -> String {
    humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
}

/// The CSS class of a status badge.
pub(crate) fn badge(state: &str) -> &'static str {
    match state {
        "Success" | "PROCESSED" | "equal" => "ok",
        "Failed" | "FAILED" | "Stalled" | "Expired" | "drift" => "bad",
        "In progress" | "UPLOADED" => "busy",
        s if s.starts_with("Held") || s == "HELD" => "held",
        _ => "idle",
    }
}
