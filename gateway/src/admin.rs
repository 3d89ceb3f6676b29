//! The admin API: a school's admin acts on their own school, the operator (an `admin`
//! token of school `*`) on the platform and any school. Directory imports, the
//! messaging suspension switches, the moderation audit trail, and the erasure of a
//! person's data on request.

use crate::cmd::audit::{self, AuditEntry};
use crate::cmd::suspension::{Scope, Suspension, Suspensions};
use crate::http::{AppState, authenticate, err};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use preau_directory::{DirectoryDoc, Profile};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;

/// Who calls the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admin {
    /// The platform's operator.
    Operator,
    /// A school's admin: (school UAI, user id).
    School(String, String),
}

impl Admin {
    /// Whether this admin may act on `school`.
    pub fn may_act_on(&self, school: &str) -> bool {
        match self {
            Admin::Operator => true,
            Admin::School(uai, _) => uai == school,
        }
    }

    /// Who, in the audit trail.
    pub fn id(&self) -> String {
        match self {
            Admin::Operator => "operator".into(),
            Admin::School(_, u) => u.clone(),
        }
    }
}

async fn admin(s: &AppState, headers: &HeaderMap) -> Result<Admin, Box<Response>> {
    let claims = authenticate(s, headers, &HashMap::new()).await?;
    if claims.profile == "admin" && claims.school == "*" {
        return Ok(Admin::Operator);
    }
    match s.g.resolve(&claims) {
        Some(u) if u.profile == Profile::Admin => Ok(Admin::School(u.school, u.id)),
        _ => Err(Box::new(err(StatusCode::FORBIDDEN, "forbidden", "not_admin", "only an administrator may do this"))),
    }
}

/// `POST /admin/directory`: imports a directory document of the caller's school (any
/// school for the operator).
pub async fn import(State(s): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let who = match admin(&s, &headers).await {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let doc: DirectoryDoc = match crate::http::json_object(&body) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    if doc.schools.iter().any(|sc| !who.may_act_on(&sc.uai)) {
        return err(StatusCode::FORBIDDEN, "forbidden", "other_school", "you may import your own school only");
    }
    match s.g.import_as(doc, &who.id()).await {
        Ok(schools) => (StatusCode::OK, Json(json!({ "schools": schools }))).into_response(),
        Err(e) => err(StatusCode::BAD_REQUEST, e.code.as_str(), "invalid_directory", &e.message),
    }
}

/// The suspensions `who` may see: the platform's and, for a school's admin, their
/// school's only.
fn visible(who: &Admin, all: &Suspensions) -> Suspensions {
    match who {
        Admin::Operator => all.clone(),
        Admin::School(uai, _) => Suspensions {
            platform: all.platform.clone(),
            schools: all.schools.iter().filter(|(k, _)| *k == uai).map(|(k, v)| (k.clone(), v.clone())).collect(),
        },
    }
}

/// `GET /admin/suspension`: the suspensions in force.
pub async fn suspensions(State(s): State<AppState>, headers: HeaderMap) -> Response {
    match admin(&s, &headers).await {
        Ok(who) => Json(visible(&who, &s.g.suspensions())).into_response(),
        Err(r) => *r,
    }
}

/// `GET /admin/audit` query: `school` (`*` for platform-wide acts; a school's admin may
/// leave it out), `since` (ms since the epoch, 0 by default), `limit` (1 to 1000, 200).
#[derive(Debug, PartialEq, Eq)]
pub struct AuditQuery {
    /// The school.
    pub school: Option<String>,
    /// From this time.
    pub since: i64,
    /// At most this many.
    pub limit: u32,
}

impl AuditQuery {
    /// Reads the query, with a stable reason for what is wrong (axum's own extractor
    /// would answer in plain text).
    pub fn parse(q: &HashMap<String, String>) -> Result<AuditQuery, Refusal> {
        let since = match q.get("since") {
            None => 0,
            Some(v) => v.parse().ok().filter(|t: &i64| *t >= 0).ok_or(Refusal(
                StatusCode::BAD_REQUEST,
                "bad_since",
                "`since` is milliseconds since the epoch",
            ))?,
        };
        let limit = match q.get("limit") {
            None => 200,
            Some(v) => v.parse().ok().filter(|n| (1..=1000).contains(n)).ok_or(Refusal(
                StatusCode::BAD_REQUEST,
                "bad_limit",
                "`limit` is 1 to 1000",
            ))?,
        };
        Ok(AuditQuery { school: q.get("school").cloned(), since, limit })
    }
}

/// `GET /admin/audit`: the moderation audit trail of a school, oldest first.
pub async fn audit_trail(
    State(s): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(raw): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let q = match AuditQuery::parse(&raw) {
        Ok(q) => q,
        Err(r) => return r.response(),
    };
    let who = match admin(&s, &headers).await {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let school = match (&q.school, &who) {
        (Some(sc), w) if w.may_act_on(sc) => sc.clone(),
        (None, Admin::School(uai, _)) => uai.clone(),
        (None, Admin::Operator) => audit::PLATFORM.to_owned(),
        _ => {
            return err(
                StatusCode::FORBIDDEN,
                "forbidden",
                "other_school",
                "you may read your own school's trail only",
            );
        }
    };
    match audit::list(&s.g, &school, q.since, q.limit).await {
        Ok(entries) => Json(json!({ "school": school, "entries": entries })).into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.code.as_str(), "store", &e.message),
    }
}

/// `PUT /admin/suspension` body. A misspelt field is refused rather than ignored (as
/// the server API's bodies): `announcement_open` must not pass for a choice made.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    /// `platform` or `school`.
    pub scope: String,
    /// The school (for `school`; a school's admin may leave it out).
    #[serde(default)]
    pub school: Option<String>,
    /// Suspend (true) or lift (false).
    pub suspended: bool,
    /// Why (shown to users).
    #[serde(default)]
    pub reason: String,
    /// The school's direction may still post announcements.
    #[serde(default)]
    pub announcements_open: bool,
}

/// A refused admin request: HTTP status, stable reason and plain message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal(pub StatusCode, pub &'static str, pub &'static str);

impl Refusal {
    fn response(self) -> Response {
        let code = if self.0 == StatusCode::FORBIDDEN { "forbidden" } else { "bad_request" };
        err(self.0, code, self.1, self.2)
    }
}

/// Decides a suspension request: its scope and the suspension to set, or why not.
pub fn decide_suspend(who: &Admin, req: SuspendRequest, now_ms: i64) -> Result<(Scope, Option<Suspension>), Refusal> {
    let scope = match (req.scope.as_str(), &req.school, who) {
        ("platform", _, Admin::Operator) => Scope::Platform,
        ("platform", _, _) => {
            return Err(Refusal(StatusCode::FORBIDDEN, "not_operator", "only the operator suspends the platform"));
        }
        ("school", Some(uai), w) if w.may_act_on(uai) => Scope::School(uai.clone()),
        ("school", None, Admin::School(uai, _)) => Scope::School(uai.clone()),
        ("school", _, _) => {
            return Err(Refusal(StatusCode::FORBIDDEN, "other_school", "you may suspend your own school only"));
        }
        _ => return Err(Refusal(StatusCode::BAD_REQUEST, "bad_scope", "`scope` is `platform` or `school`")),
    };
    if !req.suspended {
        return Ok((scope, None));
    }
    let reason = req.reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(Refusal(StatusCode::BAD_REQUEST, "bad_reason", "give a `reason` of 1 to 500 bytes"));
    }
    let s = Suspension {
        reason: reason.to_owned(),
        since_ms: now_ms,
        by: who.id(),
        announcements_open: req.announcements_open,
    };
    Ok((scope, Some(s)))
}

/// `PUT /admin/suspension`: suspends or lifts messaging; applies at once on every node.
pub async fn suspend(State(s): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let who = match admin(&s, &headers).await {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let req: SuspendRequest = match crate::http::json_object(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let (scope, sus) = match decide_suspend(&who, req, s.g.clock.now_ms()) {
        Ok(d) => d,
        Err(r) => return r.response(),
    };
    let (school, detail) = match (&scope, &sus) {
        (Scope::Platform, _) => (audit::PLATFORM.to_owned(), "platform"),
        (Scope::School(uai), _) => (uai.clone(), "school"),
    };
    let detail = match &sus {
        Some(x) => format!("messaging suspended ({detail}): {}", x.reason),
        None => format!("messaging suspension lifted ({detail})"),
    };
    match s.g.set_suspension(&scope, sus).await {
        Ok(all) => {
            audit::record(&s.g, AuditEntry::new(s.g.clock.now_ms(), &school, &who.id(), "suspension", detail)).await;
            Json(visible(&who, &all)).into_response()
        }
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.code.as_str(), "store", &e.message),
    }
}

/// `DELETE /admin/users/{id}/data`: erases a person's personal data now (an RGPD
/// request), with the departure purge's rules for shared spaces (`purge.rs`). Query:
/// `posts=remove` (the person objected) takes the text of their shared posts too;
/// `dry_run=true` counts and changes nothing; `school` names the school of a person no
/// longer in the directory (a school's admin: their own, by default).
pub async fn erase(
    State(s): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let who = match admin(&s, &headers).await {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let dry_run = match q.get("dry_run").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return err(StatusCode::BAD_REQUEST, "bad_request", "bad_dry_run", "`dry_run` is true or false"),
    };
    let school = match person_school(&s, &who, &id, &q) {
        Ok(sc) => sc,
        Err(r) => return *r,
    };
    let objected = match q.get("posts").map(String::as_str) {
        None | Some("school") => false,
        Some("remove") => true,
        Some(_) => return err(StatusCode::BAD_REQUEST, "bad_request", "bad_posts", "`posts` is school or remove"),
    };
    match s.g.erase_person(&school, &id, &who.id(), objected, dry_run).await {
        Ok(p) => Json(json!({ "school": p.school, "pseudonym": p.pseudonym, "rows": p.rows, "dry_run": dry_run }))
            .into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.code.as_str(), "erasure_failed", &e.message),
    }
}

/// The school a person-level admin request is about: the person's in the directory, else
/// `school` from the query, else a school's admin's own; refused for another school.
fn person_school(s: &AppState, who: &Admin, id: &str, q: &HashMap<String, String>) -> Result<String, Box<Response>> {
    // An id no directory could hold is a mistake to say, not a person with no data.
    if !preau_proto::valid_id(id) {
        return Err(Box::new(err(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "bad_user",
            "a user id is 1 to 64 of A-Z, a-z, 0-9, `_`, `.`, `-`",
        )));
    }
    if q.get("school").is_some_and(|sc| !preau_proto::valid_id(sc)) {
        return Err(Box::new(err(StatusCode::BAD_REQUEST, "bad_request", "bad_school", "`school` is a school's UAI")));
    }
    let listed = s.g.dir().user(id).map(|u| u.school.clone());
    let school = match (listed, q.get("school"), who) {
        (Some(sc), _, _) => sc,
        (None, Some(sc), _) => sc.clone(),
        (None, None, Admin::School(uai, _)) => uai.clone(),
        (None, None, Admin::Operator) => {
            return Err(Box::new(err(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "school_needed",
                "this person is not in the directory: say their school with `school`",
            )));
        }
    };
    if !who.may_act_on(&school) {
        return Err(Box::new(err(StatusCode::FORBIDDEN, "forbidden", "other_school", "not a person of your school")));
    }
    Ok(school)
}

/// `GET /admin/users/{id}/export`: everything held about a person, as one JSON document
/// streamed (`docs/data-protection.md`, "Export"). `school` as for the erasure.
pub async fn export(
    State(s): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let who = match admin(&s, &headers).await {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let school = match person_school(&s, &who, &id, &q) {
        Ok(sc) => sc,
        Err(r) => return *r,
    };
    let rx = s.g.export_person(&school, &id, &who.id());
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    ([(axum::http::header::CONTENT_TYPE, "application/json")], axum::body::Body::from_stream(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(scope: &str, school: Option<&str>, suspended: bool, reason: &str) -> SuspendRequest {
        SuspendRequest {
            scope: scope.into(),
            school: school.map(Into::into),
            suspended,
            reason: reason.into(),
            announcements_open: true,
        }
    }

    #[test]
    fn audit_queries_are_read_with_stable_reasons() {
        let q = |pairs: &[(&str, &str)]| {
            AuditQuery::parse(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).map_err(|r| r.1)
        };
        assert_eq!(q(&[]), Ok(AuditQuery { school: None, since: 0, limit: 200 }));
        assert_eq!(q(&[("school", "*"), ("since", "5"), ("limit", "1")]).map(|a| (a.since, a.limit)), Ok((5, 1)));
        assert_eq!(q(&[("since", "hier")]), Err("bad_since"));
        assert_eq!(
            q(&[("since", "-1")]),
            Err("bad_since"),
            "before the epoch: a mistake, said (schemathesis found it)"
        );
        assert_eq!(q(&[("limit", "0")]), Err("bad_limit"));
        assert_eq!(q(&[("limit", "1001")]), Err("bad_limit"));
    }

    #[test]
    fn who_may_suspend_what() {
        let op = Admin::Operator;
        let a = Admin::School("0750001A".into(), "ad01".into());
        let status = |r: Result<(Scope, Option<Suspension>), Refusal>| r.map(|(s, _)| s).map_err(|e| e.0);
        assert_eq!(status(decide_suspend(&op, req("platform", None, true, "menaces"), 1)), Ok(Scope::Platform));
        assert_eq!(status(decide_suspend(&a, req("platform", None, true, "x"), 1)), Err(StatusCode::FORBIDDEN));
        assert_eq!(status(decide_suspend(&a, req("school", None, true, "x"), 1)), Ok(Scope::School("0750001A".into())));
        assert_eq!(
            status(decide_suspend(&a, req("school", Some("0930002B"), true, "x"), 1)),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(decide_suspend(&op, req("school", Some("0930002B"), false, ""), 1)),
            Ok(Scope::School("0930002B".into()))
        );
        assert_eq!(
            status(decide_suspend(&a, req("school", None, true, "  "), 1)),
            Err(StatusCode::BAD_REQUEST),
            "a reason"
        );
        assert_eq!(status(decide_suspend(&a, req("moon", None, true, "x"), 1)), Err(StatusCode::BAD_REQUEST));
        let (_, s) = decide_suspend(&a, req("school", None, true, " menaces "), 42).expect("ok");
        assert_eq!(s.map(|s| (s.reason, s.since_ms, s.by)), Some(("menaces".into(), 42, "ad01".into())));
    }
}
