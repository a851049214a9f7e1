//! The components table is what the runtime builds, so it must say exactly that: every
//! role the runtime needs is declared, each at a scope its role can live in (the scope
//! rule: nothing built at boot may need a user — the "WebSocket manager created at import
//! time" crash), and each `needs` names exactly what its kind is built from.

use serde::Serialize;

use super::ctx::Ctx;
use super::schema_walk::closest;
use crate::config::raw::{AuthMode, ComponentSection, RawConfig, Scope, ServiceKind};
use crate::keypath::{KeyPath, kp};

use crate::config::raw::USER_CONTEXT;

/// What the rules need to know of one declared component, whatever its kind type.
struct Declared<'a> {
    role: &'static str,
    kind: String,
    scope: Scope,
    needs: &'a [String],
}

/// A role the runtime builds: the scopes it can live in and why the others are wrong.
struct Role {
    name: &'static str,
    scopes: &'static [Scope],
    why: &'static str,
}

const ROLES: [Role; 8] = [
    Role {
        name: "store",
        scopes: &[Scope::Process],
        why: "one pool shared by every connection",
    },
    Role {
        name: "event_bus",
        scopes: &[Scope::Process],
        why: "it routes every user's events",
    },
    Role {
        name: "jwt_keys",
        scopes: &[Scope::Process],
        why: "keys are loaded once, never per user",
    },
    Role {
        name: "agent_registry",
        scopes: &[Scope::Process],
        why: "agents hold nothing of any user",
    },
    Role {
        name: "metrics",
        scopes: &[Scope::Process],
        why: "one exposition per process",
    },
    Role {
        name: "rate_limiter",
        scopes: &[Scope::Process, Scope::Connection],
        why: "`process` limits each user across their sockets on this node, `connection` each socket",
    },
    Role {
        name: "session",
        scopes: &[Scope::Connection],
        why: "it is one socket's state, built from the verified identity",
    },
    Role {
        name: "run_context",
        scopes: &[Scope::Run],
        why: "it is one user message's run",
    },
];

fn declared<'a, K: Serialize>(
    role: &'static str,
    c: &'a Option<ComponentSection<K>>,
) -> Option<Declared<'a>> {
    c.as_ref().map(|c| Declared {
        role,
        kind: serde_json::to_value(&c.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        scope: c.scope,
        needs: &c.needs,
    })
}

/// Every role with its declaration, in [`ROLES`] order.
fn all(raw: &RawConfig) -> Vec<(&'static Role, Option<Declared<'_>>)> {
    let c = &raw.components;
    let decls = [
        declared("store", &c.store),
        declared("event_bus", &c.event_bus),
        declared("jwt_keys", &c.jwt_keys),
        declared("agent_registry", &c.agent_registry),
        declared("metrics", &c.metrics),
        declared("rate_limiter", &c.rate_limiter),
        declared("session", &c.session),
        declared("run_context", &c.run_context),
    ];
    ROLES.iter().zip(decls).collect()
}

/// `(role, needs)` of every declared component, for the cycle check.
pub fn declared_needs(raw: &RawConfig) -> Vec<(&'static str, Vec<String>)> {
    all(raw)
        .into_iter()
        .filter_map(|(r, d)| d.map(|d| (r.name, d.needs.to_vec())))
        .collect()
}

/// The database services (the store is built on one of them; `E_MULTIPLE_DATABASES`
/// refuses more).
fn databases(raw: &RawConfig) -> Vec<String> {
    raw.services
        .iter()
        .filter(|(_, s)| matches!(s.kind, ServiceKind::Sqlite | ServiceKind::Postgres))
        .map(|(n, _)| n.clone())
        .collect()
}

/// The Redis services (`E_MULTIPLE_REDIS` refuses more than one).
fn redis_services(raw: &RawConfig) -> Vec<String> {
    raw.services
        .iter()
        .filter(|(_, s)| s.kind == ServiceKind::Redis)
        .map(|(n, _)| n.clone())
        .collect()
}

/// What a component of this role and kind is built from: exactly what `needs` must list
/// (for the store: one of the database services).
fn uses(raw: &RawConfig, role: &str, kind: &str) -> Vec<String> {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match role {
        "rate_limiter" if kind == "redis" => redis_services(raw),
        "store" => databases(raw),
        "event_bus" if kind == "redis" => redis_services(raw),
        "agent_registry" => {
            let mut services: Vec<String> = raw
                .agents
                .iter()
                .filter_map(|a| a.service.clone())
                .collect();
            services.sort();
            services.dedup();
            services
        }
        "session" => names(&[USER_CONTEXT, "event_bus", "store", "rate_limiter"]),
        "run_context" => names(&[
            USER_CONTEXT,
            "session",
            "store",
            "event_bus",
            "agent_registry",
        ]),
        _ => Vec::new(),
    }
}

/// Runs the component rules.
pub fn check(cx: &mut Ctx) {
    let raw = cx.raw;
    let jwt = raw.auth.mode == AuthMode::Jwt;
    for (role, decl) in all(raw) {
        let at = kp(&format!("components.{}", role.name));
        match decl {
            None if role.name != "jwt_keys" || jwt => cx.error(
                "E_COMPONENT_MISSING",
                kp("components"),
                format!("the runtime builds `{}`, and no file declares [components.{}]", role.name, role.name),
                "extend base (extends = \"base\"), whose [components] declares every default, or copy its [components] tables",
            ),
            None => {}
            Some(d) if d.role == "jwt_keys" && !jwt => cx.warn(
                "W_COMPONENT_UNUSED",
                at,
                "[components.jwt_keys] is declared but auth.mode = \"none\" verifies no token, so nothing builds it",
                "remove it, or set auth.mode = \"jwt\"",
            ),
            Some(d) => check_one(cx, role, &d, &at),
        }
    }
}

fn check_one(cx: &mut Ctx, role: &Role, d: &Declared, at: &KeyPath) {
    let name = role.name;
    if !role.scopes.contains(&d.scope) {
        let allowed: Vec<&str> = role.scopes.iter().map(|s| s.as_str()).collect();
        cx.error(
            "E_SCOPE",
            at.key("scope"),
            format!(
                "component `{name}` cannot have scope = \"{}\": {}{}",
                d.scope.as_str(),
                role.why,
                if d.scope == Scope::Process {
                    "; built at boot it has no user and the backend dies before listening"
                } else {
                    ""
                }
            ),
            format!("set scope = \"{}\"", allowed.join("\" or \"")),
        );
    }
    if name == "rate_limiter" && d.kind == "redis" {
        shared_limiter(cx, d, at);
    }
    if name == "store" {
        one_node_on_sqlite(cx, d);
    }
    if name == "event_bus" && !bus_fits(cx, d, at) {
        return;
    }
    let used = uses(cx.raw, name, &d.kind);
    let before = cx.findings.len();
    for (i, need) in d.needs.iter().enumerate() {
        check_need(cx, role, d, at.key("needs").index(i), need, &used);
    }
    // A misspelt need is already reported with the name it was probably meant to be.
    let misspelt = cx.findings[before..]
        .iter()
        .any(|f| f.code == "E_UNKNOWN_DEPENDENCY");
    if misspelt {
        return;
    }
    let missing: Vec<&String> = if name == "store" {
        // Built on one database: listing one of them is enough.
        match used.iter().any(|u| d.needs.contains(u)) {
            true => Vec::new(),
            false => used.iter().take(1).collect(),
        }
    } else {
        used.iter().filter(|u| !d.needs.contains(u)).collect()
    };
    for missing in missing {
        cx.error(
            "E_COMPONENT_NEEDS",
            at.key("needs"),
            format!(
                "component `{name}` (kind {}) is built from `{missing}`, which its needs do not list",
                d.kind
            ),
            format!("add \"{missing}\" to components.{name}.needs"),
        );
    }
}

/// A `redis` rate limiter is shared by nodes: it needs a Redis service to be built on,
/// and limits users (a connection lives on one node, where a local bucket already holds).
fn shared_limiter(cx: &mut Ctx, d: &Declared, at: &KeyPath) {
    if redis_services(cx.raw).is_empty() {
        cx.error(
            "E_RATE_LIMITER_NO_REDIS",
            at.key("kind"),
            "component `rate_limiter` (kind redis) keeps its buckets in Redis, and no service has kind = \"redis\"",
            "declare [services.redis] with kind = \"redis\" and url_env, and list it in components.rate_limiter.needs; or set kind = \"local\"",
        );
    }
    if d.scope == Scope::Connection {
        cx.error(
            "E_SCOPE",
            at.key("scope"),
            "component `rate_limiter` (kind redis) cannot have scope = \"connection\": a connection lives on one node, so only per-user limits need sharing",
            "set scope = \"process\" (per user across nodes), or kind = \"local\" for a per-socket limit",
        );
    }
}

/// A SQLite file has one node by construction (only its group writer's connection writes,
/// and runs take turns in that process's memory): several nodes need a database they can
/// share.
fn one_node_on_sqlite(cx: &mut Ctx, d: &Declared) {
    let nodes = cx.raw.server.nodes;
    let sqlite = cx
        .raw
        .services
        .iter()
        .find(|(name, s)| s.kind == ServiceKind::Sqlite && d.needs.contains(name));
    if let Some((name, _)) = sqlite
        && nodes > 1
    {
        cx.error(
            "E_NODES_SQLITE",
            kp("server.nodes"),
            format!("server.nodes = {nodes} but the store is on the SQLite service `{name}`: a SQLite file belongs to one process, so several nodes would not share threads, runs or their order"),
            "use a Postgres service for the store (kind = \"postgres\"), or server.nodes = 1",
        );
    }
}

/// The event bus matches the deployment: `redis` has a Redis service to run on, and
/// several nodes do not share a `local` bus (each would deliver only its own runs' events).
/// False when the bus cannot be built at all (its needs are then not checked).
fn bus_fits(cx: &mut Ctx, d: &Declared, at: &KeyPath) -> bool {
    let nodes = cx.raw.server.nodes;
    match d.kind.as_str() {
        "redis" if redis_services(cx.raw).is_empty() => {
            cx.error(
                "E_EVENT_BUS_NO_REDIS",
                at.key("kind"),
                "the event bus is kind = \"redis\" but no service has kind = \"redis\": there is nothing to publish events through",
                "declare [services.redis] kind = \"redis\" with url_env, and list it in components.event_bus.needs; or use kind = \"local\" on a single node",
            );
            false
        }
        "local" if nodes > 1 => {
            cx.error(
                "E_EVENT_BUS_LOCAL",
                at.key("kind"),
                format!("server.nodes = {nodes} but the event bus is kind = \"local\": a user's socket on one node would never see the events of runs on another"),
                "set kind = \"redis\" and needs = [\"<your redis service>\"] in [components.event_bus], or server.nodes = 1",
            );
            true
        }
        _ => true,
    }
}

/// Checks one entry of a component's `needs`; at most one finding per entry, from the
/// first rule that refuses it.
fn check_need(cx: &mut Ctx, role: &Role, d: &Declared, at: KeyPath, need: &str, used: &[String]) {
    let reported = user_context_at_boot(cx, role, d, &at, need)
        || need_in_narrower_scope(cx, role, d, &at, need)
        || unknown_need(cx, role, &at, need, used);
    if !reported {
        unused_need(cx, role, d, at, need, used);
    }
}

/// `E_SCOPE`: refuses a process-scope component that needs the user context, which exists
/// only per connection (the boot-time crash). True when it reported.
fn user_context_at_boot(cx: &mut Ctx, role: &Role, d: &Declared, at: &KeyPath, need: &str) -> bool {
    let name = role.name;
    if need != USER_CONTEXT || d.scope != Scope::Process {
        return false;
    }
    let hint = if role.scopes.contains(&Scope::Connection) {
        format!(
            "give `{name}` scope = \"connection\" (built per socket from the verified identity), or drop `{USER_CONTEXT}` from its needs"
        )
    } else {
        format!(
            "`{name}` is always built at boot ({}): drop `{USER_CONTEXT}` from its needs",
            role.why
        )
    };
    cx.error(
        "E_SCOPE",
        at.clone(),
        format!("process-scope component `{name}` needs `{USER_CONTEXT}`, which exists only per connection: built at boot, it crashes the backend and clients see \"connection refused\""),
        hint,
    );
    true
}

/// `E_SCOPE`: refuses a need on a component of a narrower scope, which does not exist yet
/// when this one is built. True when it reported.
fn need_in_narrower_scope(
    cx: &mut Ctx,
    role: &Role,
    d: &Declared,
    at: &KeyPath,
    need: &str,
) -> bool {
    let name = role.name;
    let other_scope = all(cx.raw)
        .into_iter()
        .find(|(r, _)| r.name == need)
        .and_then(|(_, d)| d.map(|d| d.scope));
    let Some(other) = other_scope.filter(|other| *other > d.scope) else {
        return false;
    };
    let hint = if role.scopes.contains(&other) {
        format!(
            "narrow `{name}` to scope = \"{}\", or drop `{need}` from its needs",
            other.as_str()
        )
    } else {
        format!(
            "`{name}` cannot be {}-scope ({}): drop `{need}` from its needs",
            other.as_str(),
            role.why
        )
    };
    cx.error(
        "E_SCOPE",
        at.clone(),
        format!(
            "{}-scope component `{name}` needs `{need}`, which is {}-scope and does not exist when `{name}` is built",
            d.scope.as_str(),
            other.as_str()
        ),
        hint,
    );
    true
}

/// `E_UNKNOWN_DEPENDENCY`: refuses a need that is neither a component, a service nor the
/// user context (a service an agent names is reported by the agent rules if it does not
/// exist). True when it reported.
fn unknown_need(cx: &mut Ctx, role: &Role, at: &KeyPath, need: &str, used: &[String]) -> bool {
    let name = role.name;
    let known = used.iter().any(|u| u == need)
        || need == USER_CONTEXT
        || ROLES.iter().any(|r| r.name == need)
        || cx.raw.services.contains_key(need);
    if known {
        return false;
    }
    let names: Vec<&str> = ROLES
        .iter()
        .map(|r| r.name)
        .chain(cx.raw.services.keys().map(String::as_str))
        .chain([USER_CONTEXT])
        .collect();
    let hint = closest(need, names.iter().copied())
        .map(|c| format!("did you mean `{c}`?"))
        .unwrap_or_else(|| format!("known names: {}", names.join(", ")));
    cx.error(
        "E_UNKNOWN_DEPENDENCY",
        at.clone(),
        format!("component `{name}` needs `{need}`, which is neither a component, a service nor `{USER_CONTEXT}`"),
        hint,
    );
    true
}

/// `E_COMPONENT_UNUSED_NEED`: refuses a need the component's kind is not built from, a
/// declaration nothing obeys.
fn unused_need(cx: &mut Ctx, role: &Role, d: &Declared, at: KeyPath, need: &str, used: &[String]) {
    let name = role.name;
    if !used.iter().any(|u| u == need) {
        cx.error(
            "E_COMPONENT_UNUSED_NEED",
            at,
            format!(
                "component `{name}` (kind {}) is not built from `{need}`: a need nothing uses is a declaration nothing obeys",
                d.kind
            ),
            format!("remove \"{need}\" from components.{name}.needs"),
        );
    }
}
