//! Access control: rules from the config file, first match wins.
//!
//! A rule names a permission, an action and a topic filter in which `%c`
//! and `%u` stand for the client id and the user name, and optionally the
//! client id, user name or IP address (or CIDR block) it applies to.

use std::borrow::Cow;
use std::net::IpAddr;

use robustmq_protocol::topic;
use serde::Deserialize;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// The action is allowed.
    #[default]
    Allow,
    /// The action is refused.
    Deny,
}

/// What a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAction {
    /// PUBLISH.
    Publish,
    /// SUBSCRIBE.
    Subscribe,
    /// Both.
    All,
}

/// An action a client attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Publishing to a topic name.
    Publish,
    /// Subscribing to a topic filter.
    Subscribe,
}

/// One `[[mqtt.acl]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// Allow or deny.
    pub permission: Permission,
    /// publish, subscribe or all.
    pub action: AclAction,
    /// A topic filter; `%c` and `%u` expand to client id and user name.
    pub topic: String,
    /// Only for this client id.
    #[serde(default)]
    pub clientid: Option<String>,
    /// Only for this user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Only for this address or CIDR block (`10.0.0.0/8`).
    #[serde(default)]
    pub ipaddr: Option<String>,
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    /// Client id.
    pub client_id: &'a str,
    /// User name, if any.
    pub username: Option<&'a str>,
    /// Peer address, if known.
    pub ip: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}` has an invalid prefix length"))?,
        };
        Ok(Cidr { net, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
struct CompiledRule {
    rule: AclRule,
    cidr: Option<Cidr>,
}

/// The compiled rule list.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    rules: Vec<CompiledRule>,
    no_match: Permission,
}

impl Acl {
    /// Compiles the rules; an error names the rule (by index) and the key.
    pub fn new(rules: &[AclRule], no_match: Permission) -> Result<Acl, (String, String)> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            topic::validate_topic_filter(&rule.topic)
                .map_err(|e| (format!("mqtt.acl[{i}].topic"), e.to_string()))?;
            let cidr = match &rule.ipaddr {
                Some(s) => Some(Cidr::parse(s).map_err(|e| (format!("mqtt.acl[{i}].ipaddr"), e))?),
                None => None,
            };
            compiled.push(CompiledRule {
                rule: rule.clone(),
                cidr,
            });
        }
        Ok(Acl {
            rules: compiled,
            no_match,
        })
    }

    /// Whether a rule names client addresses: only then does the broker
    /// look a connection's peer address up (a `getpeername` per
    /// connection otherwise spent for nothing).
    pub fn uses_addresses(&self) -> bool {
        self.rules.iter().any(|r| r.cidr.is_some())
    }

    /// Whether `who` may do `access` on `topic_or_filter`.
    pub fn check(&self, who: &ClientInfo<'_>, access: Access, topic_or_filter: &str) -> bool {
        for CompiledRule { rule, cidr } in &self.rules {
            let action = matches!(
                (rule.action, access),
                (AclAction::All, _)
                    | (AclAction::Publish, Access::Publish)
                    | (AclAction::Subscribe, Access::Subscribe)
            );
            if !action
                || rule.clientid.as_deref().is_some_and(|c| c != who.client_id)
                || rule.username.is_some() && rule.username.as_deref() != who.username
                || cidr
                    .as_ref()
                    .is_some_and(|c| !who.ip.is_some_and(|ip| c.contains(ip)))
            {
                continue;
            }
            let filter = expand(&rule.topic, who);
            // A subscription is covered when the rule's filter matches it
            // read as a name (`+` and `#` in it as plain levels), or equals it.
            if *filter == *topic_or_filter || topic::matches(&filter, topic_or_filter) {
                return rule.permission == Permission::Allow;
            }
        }
        self.no_match == Permission::Allow
    }

    /// Whether any rule exists.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// The rule's filter with `%c` and `%u` replaced; borrowed (no
/// allocation per check) when it has neither.
fn expand<'a>(filter: &'a str, who: &ClientInfo<'_>) -> Cow<'a, str> {
    if !filter.contains('%') {
        return Cow::Borrowed(filter);
    }
    Cow::Owned(
        filter
            .replace("%c", who.client_id)
            .replace("%u", who.username.unwrap_or("")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(permission: Permission, action: AclAction, topic: &str) -> AclRule {
        AclRule {
            permission,
            action,
            topic: topic.into(),
            clientid: None,
            username: None,
            ipaddr: None,
        }
    }

    fn who<'a>(client_id: &'a str, username: Option<&'a str>, ip: &str) -> ClientInfo<'a> {
        ClientInfo {
            client_id,
            username,
            ip: Some(ip.parse().unwrap()),
        }
    }

    #[test]
    fn first_match_wins() {
        use AclAction::*;
        use Permission::*;
        let acl = Acl::new(
            &[
                rule(Deny, Subscribe, "test/nosubscribe"),
                rule(Allow, All, "test/#"),
                rule(Deny, All, "#"),
            ],
            Allow,
        )
        .unwrap();
        let c = who("c1", None, "127.0.0.1");
        assert!(!acl.check(&c, Access::Subscribe, "test/nosubscribe"));
        assert!(acl.check(&c, Access::Publish, "test/nosubscribe"));
        assert!(acl.check(&c, Access::Subscribe, "test/other"));
        assert!(!acl.check(&c, Access::Publish, "elsewhere"));
    }

    #[test]
    fn placeholders_and_conditions() {
        use AclAction::*;
        use Permission::*;
        let mut own = rule(Allow, All, "clients/%c/#");
        own.username = Some("u1".into());
        let mut net = rule(Allow, Publish, "lan/#");
        net.ipaddr = Some("10.1.0.0/16".into());
        let without_addresses = Acl::new(std::slice::from_ref(&own), Deny).unwrap();
        assert!(!without_addresses.uses_addresses());
        let acl = Acl::new(&[own, net], Deny).unwrap();
        assert!(acl.uses_addresses(), "the broker must look addresses up");
        assert!(acl.check(
            &who("c1", Some("u1"), "1.1.1.1"),
            Access::Publish,
            "clients/c1/x"
        ));
        assert!(!acl.check(
            &who("c1", Some("u2"), "1.1.1.1"),
            Access::Publish,
            "clients/c1/x"
        ));
        assert!(!acl.check(
            &who("c2", Some("u1"), "1.1.1.1"),
            Access::Publish,
            "clients/c1/x"
        ));
        assert!(acl.check(&who("c", None, "10.1.2.3"), Access::Publish, "lan/a"));
        assert!(!acl.check(&who("c", None, "10.2.0.1"), Access::Publish, "lan/a"));
        assert!(!acl.check(&who("c", None, "10.1.2.3"), Access::Subscribe, "lan/a"));
    }

    #[test]
    fn bad_rules_name_the_key() {
        let mut bad = rule(Permission::Deny, AclAction::All, "a/#");
        bad.ipaddr = Some("300.1.1.1".into());
        let (key, _) = Acl::new(
            &[rule(Permission::Allow, AclAction::All, "ok"), bad],
            Permission::Allow,
        )
        .unwrap_err();
        assert_eq!(key, "mqtt.acl[1].ipaddr");
        let (key, _) = Acl::new(
            &[rule(Permission::Allow, AclAction::All, "a/#/b")],
            Permission::Allow,
        )
        .unwrap_err();
        assert_eq!(key, "mqtt.acl[0].topic");
    }
}
