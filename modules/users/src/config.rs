//! The configuration keys, with cloud-init's names and shapes.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Top-level keys read by `users-groups`.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(default)]
pub struct UsersConfig {
    /// Groups to create: a list of names (an item may be `{group: [members]}`), a map of
    /// group → members, or a comma-separated string.
    pub groups: Option<GroupsSpec>,
    /// Users to create (missing) or complete (existing); `default` is the default user.
    /// `users: []`: no default user (the metadata keys go to nobody).
    pub users: Option<Vec<UserItem>>,
    /// The image's default user: a name (`admin`) or cloud-init's map (`{name, groups, sudo, ...}`).
    /// Created when missing (with sudo and the admin groups), and given the instance's keys.
    pub default_user: Option<DefaultUser>,
    /// cloud-init's `system_info`: only `default_user` is read (the rest is ignored with a warning).
    pub system_info: Option<SystemInfo>,
}

/// cloud-init's `system_info`; stoke reads `default_user` only.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
pub struct SystemInfo {
    pub default_user: Option<DefaultUser>,
    /// Everything else cloud-init keeps here (distro, paths, ...): ignored, warned.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `default_user: admin` or `default_user: {name: admin, ...}`.
#[derive(Clone, Debug, JsonSchema)]
#[serde(untagged)]
pub enum DefaultUser {
    Name(String),
    Spec(Box<UserSpec>),
}

impl<'de> Deserialize<'de> for DefaultUser {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DefaultUser;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a user name or a map of user settings with `name`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DefaultUser, E> {
                Ok(DefaultUser::Name(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DefaultUser, A::Error> {
                UserSpec::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|u| DefaultUser::Spec(Box::new(u)))
            }
        }
        d.deserialize_any(V)
    }
}

impl DefaultUser {
    pub fn spec(&self) -> UserSpec {
        match self {
            DefaultUser::Name(n) => UserSpec {
                name: Some(n.clone()),
                ..UserSpec::default()
            },
            DefaultUser::Spec(s) => (**s).clone(),
        }
    }
}

/// `groups:` in its three cloud-init shapes.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum GroupsSpec {
    Csv(String),
    List(Vec<GroupItem>),
    Map(BTreeMap<String, Members>),
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum GroupItem {
    Name(String),
    WithMembers(BTreeMap<String, Members>),
}

/// A group's members: a name, a list, or nothing.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Members {
    None(()),
    One(String),
    Many(Vec<String>),
}

impl Members {
    pub fn names(&self) -> Vec<String> {
        match self {
            Members::None(()) => Vec::new(),
            Members::One(s) => split_csv(s),
            Members::Many(v) => v.iter().map(|s| s.trim().to_string()).collect(),
        }
    }
}

impl GroupsSpec {
    /// (group, members) in the order given.
    pub fn entries(&self) -> Vec<(String, Vec<String>)> {
        let map_entries = |m: &BTreeMap<String, Members>| {
            m.iter()
                .map(|(g, mem)| (g.trim().to_string(), mem.names()))
                .collect::<Vec<_>>()
        };
        match self {
            GroupsSpec::Csv(s) => split_csv(s).into_iter().map(|g| (g, Vec::new())).collect(),
            GroupsSpec::Map(m) => map_entries(m),
            GroupsSpec::List(items) => items
                .iter()
                .flat_map(|i| match i {
                    GroupItem::Name(n) => vec![(n.trim().to_string(), Vec::new())],
                    GroupItem::WithMembers(m) => map_entries(m),
                })
                .collect(),
        }
    }
}

pub fn split_csv(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// An entry of `users`: a name (`default`, or a user to create with defaults) or a map.
#[derive(Clone, Debug, JsonSchema)]
#[serde(untagged)]
pub enum UserItem {
    Name(String),
    Spec(Box<UserSpec>),
}

// By hand rather than `untagged`, so an error inside a user (a typo) keeps its message.
impl<'de> Deserialize<'de> for UserItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UserItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a user name or a map of user settings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UserItem, E> {
                Ok(UserItem::Name(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UserItem, A::Error> {
                UserSpec::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|u| UserItem::Spec(Box::new(u)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A list of names, or one comma-separated string (cloud-init takes both).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum NameList {
    Csv(String),
    List(Vec<String>),
}

impl NameList {
    pub fn names(&self) -> Vec<String> {
        match self {
            NameList::Csv(s) => split_csv(s),
            NameList::List(v) => v.iter().map(|s| s.trim().to_string()).collect(),
        }
    }
}

/// A number or a string of digits (YAML users write both).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum Number {
    Int(i64),
    Text(String),
}

impl Number {
    pub fn text(&self) -> String {
        match self {
            Number::Int(i) => i.to_string(),
            Number::Text(s) => s.trim().to_string(),
        }
    }
}

/// `sudo`: one rule, several, or `false` (none). `null` is none too.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum Sudo {
    Flag(bool),
    One(String),
    Many(Vec<String>),
}

impl Sudo {
    /// The rules, or an error for `sudo: true` (cloud-init dropped it: it names no rule).
    pub fn rules(&self) -> Result<Vec<String>, String> {
        match self {
            Sudo::Flag(false) => Ok(Vec::new()),
            Sudo::Flag(true) => {
                Err("`sudo: true` names no rule; give one such as `ALL=(ALL) NOPASSWD:ALL`".into())
            }
            Sudo::One(r) => Ok(vec![r.clone()]),
            Sudo::Many(v) => Ok(v.clone()),
        }
    }
}

/// One user, cloud-init's settings. Every key has cloud-init's meaning.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// Required, except in the `snapuser` form.
    pub name: Option<String>,
    pub gecos: Option<String>,
    pub homedir: Option<String>,
    pub primary_group: Option<String>,
    /// Supplementary groups: a list or a comma-separated string.
    pub groups: Option<NameList>,
    pub shell: Option<String>,
    #[serde(default)]
    pub system: bool,
    #[serde(default)]
    pub no_create_home: bool,
    pub uid: Option<Number>,
    /// Lock the password (default true). The account can still log in with a key.
    #[serde(alias = "lock-passwd")]
    pub lock_passwd: Option<bool>,
    /// A crypt(3) hash.
    pub passwd: Option<String>,
    /// A crypt(3) hash.
    pub hashed_passwd: Option<String>,
    /// A clear-text password (warned: it stays in the state copy of user-data).
    pub plain_text_passwd: Option<String>,
    /// `YYYY-MM-DD`.
    pub expiredate: Option<String>,
    /// Days after the password expires until the account is disabled.
    pub inactive: Option<Number>,
    pub sudo: Option<Sudo>,
    #[serde(default, alias = "ssh-authorized-keys")]
    pub ssh_authorized_keys: Vec<String>,
    /// Accepted, not done (needs the network to GitHub/Launchpad): warned.
    pub ssh_import_id: Option<NameList>,
    /// Ubuntu Core's snap user form: warned and skipped.
    pub snapuser: Option<String>,
    /// Create missing `groups` (default true).
    pub create_groups: Option<bool>,
    /// No group named after the user: `primary_group` or the system default.
    #[serde(default)]
    pub no_user_group: bool,
    /// Not added to lastlog/faillog.
    #[serde(default)]
    pub no_log_init: bool,
    /// Accepted, not done (SELinux user mapping): warned.
    pub selinux_user: Option<String>,
    /// Accepted, not done: warned.
    pub ssh_redirect_user: Option<bool>,
    /// Accepted, not done (doas rules): warned.
    pub doas: Option<Vec<String>>,
}
