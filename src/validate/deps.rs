//! Services: URLs present and of the right scheme, names that exist, and no dependency
//! cycles among services and components (the component rules are in `components.rs`).

use std::collections::{BTreeMap, BTreeSet};

use super::ctx::Ctx;
use super::schema_walk::closest;
use crate::config::raw::{ServiceKind, ServiceSection};
use crate::keypath::{KeyPath, kp};

fn schemes(kind: ServiceKind) -> &'static [&'static str] {
    match kind {
        ServiceKind::Sqlite => &["sqlite"],
        ServiceKind::Postgres => &["postgres", "postgresql"],
        ServiceKind::Redis => &["redis", "rediss"],
        ServiceKind::Openai | ServiceKind::Http => &["http", "https"],
    }
}

/// Runs the service and component rules.
pub fn check(cx: &mut Ctx) {
    check_services(cx);
    check_cycles(cx);
}

/// Runs the service rules: the singleton stores first, then each service in name order.
fn check_services(cx: &mut Ctx) {
    let services = &cx.raw.services;
    one_database(cx, services);
    one_redis(cx, services);
    for (name, s) in services {
        let at = kp(&format!("services.{name}"));
        sqlite_in_production(cx, s, &at);
        if let Some(u) = service_url(cx, name, s, &at) {
            url_scheme(cx, name, s, &at, &u);
        }
        known_needs(cx, services, name, s, &at);
    }
}

/// `E_NO_DATABASE` / `E_MULTIPLE_DATABASES`: refuses a configuration without exactly one
/// sqlite or postgres service, since messages and events need one store of record.
fn one_database(cx: &mut Ctx, services: &BTreeMap<String, ServiceSection>) {
    let dbs: Vec<&String> = services
        .iter()
        .filter(|(_, s)| matches!(s.kind, ServiceKind::Sqlite | ServiceKind::Postgres))
        .map(|(n, _)| n)
        .collect();
    match dbs.len() {
        0 => cx.error("E_NO_DATABASE", kp("services"), "no database service: messages and events need a store", "add [services.database] kind = \"sqlite\", url = \"sqlite://data/portcullis.db\" (or kind = \"postgres\")"),
        1 => {}
        _ => cx.error("E_MULTIPLE_DATABASES", kp(&format!("services.{}", dbs[1])), format!("several database services ({}); the store of record must be one", dbs.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")), "keep one sqlite or postgres service"),
    }
}

/// `E_MULTIPLE_REDIS`: refuses more than one redis service, since the event bus must be one.
fn one_redis(cx: &mut Ctx, services: &BTreeMap<String, ServiceSection>) {
    let redis: Vec<&String> = services
        .iter()
        .filter(|(_, s)| s.kind == ServiceKind::Redis)
        .map(|(n, _)| n)
        .collect();
    if redis.len() > 1 {
        // Point at the second one, as for databases: `services` itself is usually the
        // header of an unrelated table (`[services.database]`).
        cx.error(
            "E_MULTIPLE_REDIS",
            kp(&format!("services.{}", redis[1])),
            format!(
                "several redis services ({}); the event bus must be one",
                redis
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "keep one redis service for the event bus",
        );
    }
}

/// `W_SQLITE_IN_PRODUCTION`: warns that SQLite in production keeps state on one node.
fn sqlite_in_production(cx: &mut Ctx, s: &ServiceSection, at: &KeyPath) {
    if s.kind == ServiceKind::Sqlite && cx.production() {
        cx.warn(
            "W_SQLITE_IN_PRODUCTION",
            at.key("kind"),
            "SQLite in production keeps state on one node",
            "use kind = \"postgres\" when running more than one node",
        );
    }
}

/// `E_SERVICE_URL_CONFLICT` / `E_INLINE_SECRET` / `E_SERVICE_NO_URL` / `W_SERVICE_NO_URL`:
/// refuses ambiguous or missing URLs and passwords written into the file outside
/// development; returns the service's URL when there is exactly one to check further.
fn service_url(cx: &mut Ctx, name: &str, s: &ServiceSection, at: &KeyPath) -> Option<String> {
    match (&s.url, &s.url_env) {
        (Some(_), Some(_)) => {
            cx.error(
                "E_SERVICE_URL_CONFLICT",
                at.clone(),
                format!("service `{name}` sets both url and url_env"),
                "keep one",
            );
            None
        }
        (Some(u), None) => {
            let creds = u
                .split_once("://")
                .and_then(|(_, r)| r.split('/').next())
                .is_some_and(|auth| {
                    auth.contains('@') && auth.split('@').next().is_some_and(|ui| ui.contains(':'))
                });
            if creds && !cx.relaxed() {
                cx.error(
                    "E_INLINE_SECRET",
                    at.key("url"),
                    format!("service `{name}` has a password inline in its URL"),
                    "move the URL into a variable and use url_env",
                );
            }
            Some(u.clone())
        }
        (None, Some(var)) => {
            cx.env_var(at.key("url_env"), var, &format!("URL of service `{name}`"))
        }
        (None, None) => {
            if s.required {
                cx.error(
                    "E_SERVICE_NO_URL",
                    at.clone(),
                    format!("required service `{name}` has no url or url_env"),
                    "add url = \"…\" (development) or url_env = \"…\"",
                );
            } else {
                cx.warn(
                    "W_SERVICE_NO_URL",
                    at.clone(),
                    format!("service `{name}` has no URL and will be skipped"),
                    "add url or url_env, or remove it",
                );
            }
            None
        }
    }
}

/// `E_SERVICE_URL_SCHEME`: refuses a URL whose scheme the service's kind cannot dial.
fn url_scheme(cx: &mut Ctx, name: &str, s: &ServiceSection, at: &KeyPath, u: &str) {
    let scheme = u.split("://").next().unwrap_or_default();
    let allowed = schemes(s.kind);
    if !u.contains("://") || !allowed.contains(&scheme) {
        let path = if s.url.is_some() {
            at.key("url")
        } else {
            at.key("url_env")
        };
        cx.error(
            "E_SERVICE_URL_SCHEME",
            path,
            format!(
                "service `{name}` of kind {:?} has a URL that does not start with {}://",
                s.kind,
                allowed.join(":// or ")
            ),
            format!("write e.g. {}://…", allowed[0]),
        );
    }
}

/// `E_UNKNOWN_DEPENDENCY`: refuses a `needs` entry naming a service that is not declared.
fn known_needs(
    cx: &mut Ctx,
    services: &BTreeMap<String, ServiceSection>,
    name: &str,
    s: &ServiceSection,
    at: &KeyPath,
) {
    for (i, need) in s.needs.iter().enumerate() {
        if !services.contains_key(need) {
            let hint = closest(need, services.keys().map(String::as_str))
                .map(|c| format!("did you mean `{c}`?"))
                .unwrap_or_else(|| "declare it under [services]".into());
            cx.error(
                "E_UNKNOWN_DEPENDENCY",
                at.key("needs").index(i),
                format!("service `{name}` needs unknown service `{need}`"),
                hint,
            );
        }
    }
}

/// Finds every cycle in the `needs` graph of components and services (reported once each).
fn check_cycles(cx: &mut Ctx) {
    let mut graph: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for (n, needs) in super::components::declared_needs(cx.raw) {
        graph.insert(n.to_string(), (format!("components.{n}.needs"), needs));
    }
    for (n, s) in &cx.raw.services {
        graph
            .entry(n.clone())
            .or_insert((format!("services.{n}.needs"), s.needs.clone()));
    }
    let mut reported: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((node, path)) = stack.pop() {
            let Some((_, needs)) = graph.get(&node) else {
                continue;
            };
            for n in needs {
                if n == start {
                    let mut key = path.clone();
                    key.sort();
                    if reported.insert(key) {
                        let (at, _) = &graph[start];
                        let cycle = path
                            .iter()
                            .chain([start])
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(" -> ");
                        cx.error(
                            "E_DEPENDENCY_CYCLE",
                            kp(at),
                            format!("dependency cycle: {cycle}"),
                            "break the cycle: one of these must not need the other",
                        );
                    }
                } else if !path.contains(n) && graph.contains_key(n) {
                    let mut p = path.clone();
                    p.push(n.clone());
                    stack.push((n.clone(), p));
                }
            }
        }
    }
}
