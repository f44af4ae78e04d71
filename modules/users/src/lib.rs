//! `users-groups`: cloud-init's `groups`, `users` and default user.
//!
//! Order within the module: groups → users → group members → sudo rules. Keys are
//! the next module's (`ssh-authorized-keys` runs after this one and reads the
//! same `users` entries). Everything is checked before the first command (names,
//! uids, groups, every sudo rule through `visudo -cf -`), so bad input fails the
//! module naming the entry with nothing made. Accounts are made with the
//! distribution's tools (`groupadd`, `useradd`, `usermod`, `chpasswd`), with
//! `--root DIR` under a sandbox; passwords go on stdin, never on a command line.
//! Existing users are not recreated: their missing groups, sudo rules and any
//! password given are added. See docs/users.md.

#![forbid(unsafe_code)]

mod accounts;
mod config;
mod passwords;
#[cfg(test)]
mod passwords_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use stoke_api::{
    Cmd, Context, Frequency, Module, ModuleError, ModuleSpec, Order, Report, RootDir, Stage,
    config_spec, tools,
};

use accounts::Accounts;
pub use config::{DefaultUser, UserItem, UserSpec, UsersConfig};

/// Groups cloud-init gives a created default user, where the image has them.
const DEFAULT_USER_GROUPS: &[&str] = &["adm", "wheel", "sudo", "systemd-journal"];
/// cloud-init's sudo rule for the default user.
const DEFAULT_USER_SUDO: &str = "ALL=(ALL) NOPASSWD:ALL";
const SUDOERS_DIR: &str = "/etc/sudoers.d";
const CMD_TIMEOUT: Duration = Duration::from_secs(30);

pub fn modules() -> Vec<Box<dyn Module>> {
    vec![Box::new(UsersGroups), Box::new(passwords::SetPasswords)]
}

pub struct UsersGroups;

#[stoke_api::async_trait]
impl Module for UsersGroups {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec {
            name: "users-groups",
            // Accounts before sshd and before the keys module (which runs after this one).
            stage: Stage::Local,
            frequency: Frequency::PerInstance,
            after: &[],
            needs_metadata: false,
            before_logins: true,
            timeout: Duration::from_secs(300),
            config: config_spec::<UsersConfig>().lenient(&["users"]),
            order: Order::Normal,
        }
    }

    async fn run(&self, ctx: &Context) -> Result<Report, ModuleError> {
        let cfg: UsersConfig = ctx.config()?;
        let dir =
            RootDir::open(&ctx.root).map_err(|e| ModuleError::io("opening", ctx.root.dir(), e))?;
        let accounts = Accounts::read(&dir, &ctx.root)?;
        let mut warnings = Vec::new();
        let plan = make_plan(&cfg, &accounts, &dir, &mut warnings)?;
        check_sudo_rules(ctx, &plan).await?;
        let done = apply(ctx, &dir, &plan, &accounts, &mut warnings).await?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let summary = summary(&plan, &done);
        let mut report = Report::new(summary).with_details(json!({
            "default_user": plan.default_user,
            "groups_created": done.groups_created,
            "users_created": done.users_created,
            "users_existing": done.users_existing,
            "groups_added": done.groups_added,
            "sudoers": done.sudoers,
        }));
        for w in warnings {
            report.warn(w);
        }
        Ok(report)
    }

    fn plan(&self, ctx: &Context) -> Option<String> {
        let cfg: UsersConfig = ctx.config().ok()?;
        let users = cfg.users.as_ref().map_or(0, Vec::len);
        Some(match default_user_spec(&cfg) {
            Some(d) if cfg.users.as_ref().is_none_or(|u| !u.is_empty()) => format!(
                "default user {}; {users} users entries",
                d.name.unwrap_or_default()
            ),
            _ => format!("no default user; {users} users entries"),
        })
    }
}

/// The default user's settings from `default_user`, else `system_info.default_user`.
pub fn default_user_spec(cfg: &UsersConfig) -> Option<UserSpec> {
    cfg.default_user
        .as_ref()
        .or_else(|| cfg.system_info.as_ref()?.default_user.as_ref())
        .map(DefaultUser::spec)
}

/// One user to create or complete.
#[derive(Debug)]
struct UserPlan {
    /// Where it came from, for messages: `users[2] (bob)`, `default user (admin)`.
    label: String,
    name: String,
    spec: UserSpec,
    exists: bool,
    /// Supplementary groups wanted.
    groups: Vec<String>,
    sudo: Vec<String>,
}

#[derive(Debug, Default)]
struct Plan {
    default_user: Option<String>,
    /// Groups to create (missing ones), in order.
    new_groups: Vec<String>,
    /// `groups:` members: (group, user) pairs not yet members.
    members: Vec<(String, String)>,
    users: Vec<UserPlan>,
}

/// Checks everything and decides what to do; an error names each bad entry.
fn make_plan(
    cfg: &UsersConfig,
    acc: &Accounts,
    dir: &RootDir,
    warnings: &mut Vec<String>,
) -> Result<Plan, ModuleError> {
    let mut errors = Vec::new();
    let mut plan = Plan::default();

    if let Some(si) = &cfg.system_info
        && !si.other.is_empty()
    {
        warnings.push(format!(
            "system_info: only default_user is read by stoke; ignored: {}",
            si.other.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }

    // groups: first, so users may name them.
    let mut group_members: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(g) = &cfg.groups {
        for (i, (name, members)) in g.entries().into_iter().enumerate() {
            if let Err(e) = check_name(&name) {
                errors.push(format!("groups[{i}] ({name}): {e}"));
                continue;
            }
            if !acc.has_group(&name) && !plan.new_groups.contains(&name) {
                plan.new_groups.push(name.clone());
            }
            group_members.push((name, members));
        }
    }

    // users: the default user (unless `users: []`), then the entries.
    let default = default_user_spec(cfg);
    let empty_list = cfg.users.as_ref().is_some_and(Vec::is_empty);
    let mut specs: Vec<(String, UserSpec, bool)> = Vec::new();
    if let Some(d) = &default
        && !empty_list
    {
        let name = d.name.clone().unwrap_or_default();
        specs.push((format!("default user ({name})"), d.clone(), true));
    }
    for (i, item) in cfg.users.iter().flatten().enumerate() {
        let spec = match item {
            UserItem::Name(n) if n.trim() == "default" => {
                if default.is_none() {
                    warnings.push(format!(
                        "users[{i}]: `default` but no default_user is configured; nothing to do"
                    ));
                }
                continue;
            }
            UserItem::Name(n) => UserSpec {
                name: Some(n.trim().to_string()),
                ..UserSpec::default()
            },
            UserItem::Spec(s) => (**s).clone(),
        };
        if let Some(snap) = &spec.snapuser {
            warnings.push(format!(
                "users[{i}]: snapuser {snap}: snap users (Ubuntu Core) are not supported; skipped"
            ));
            continue;
        }
        let Some(name) = spec.name.clone() else {
            errors.push(format!("users[{i}]: no `name`"));
            continue;
        };
        let label = format!("users[{i}] ({name})");
        // An entry for the default user completes it rather than listing it twice.
        if let Some(slot) = specs
            .iter_mut()
            .find(|(_, s, _)| s.name.as_deref() == Some(&name))
        {
            if slot.2 && !slot.0.starts_with("users[") {
                // Still the default user: cloud-init's defaults fill what the entry leaves out.
                slot.0 = format!("{label}, the default user");
                slot.1 = spec;
                continue;
            }
            errors.push(format!("{label}: listed twice (also {})", slot.0));
            continue;
        }
        specs.push((label, spec, false));
    }
    if let Some(d) = &default
        && !empty_list
    {
        plan.default_user = d.name.clone();
    }

    let mut uids_wanted: BTreeMap<u32, String> = BTreeMap::new();
    for (label, spec, is_default) in specs {
        let name = spec.name.clone().unwrap_or_default();
        let exists = acc.user(&name).is_some();
        match check_user(&name, &spec, exists, acc, &plan, &mut uids_wanted, &label) {
            Ok(()) => {}
            Err(e) => {
                errors.push(e);
                continue;
            }
        }
        for (key, what) in [
            (
                spec.ssh_import_id.is_some(),
                "ssh_import_id (needs the network to GitHub/Launchpad)",
            ),
            (spec.selinux_user.is_some(), "selinux_user"),
            (spec.ssh_redirect_user.is_some(), "ssh_redirect_user"),
            (spec.doas.is_some(), "doas"),
        ] {
            if key {
                warnings.push(format!(
                    "{label}: {what} is not supported by stoke; ignored"
                ));
            }
        }
        if spec.plain_text_passwd.is_some() {
            warnings.push(format!(
                "{label}: plain_text_passwd is set: the clear-text password stays in the state copy of \
                 user-data; prefer hashed_passwd"
            ));
        }
        let mut groups = spec.groups.as_ref().map(|g| g.names()).unwrap_or_default();
        let mut sudo = match spec.sudo.as_ref().map(|s| s.rules()).transpose() {
            Ok(r) => r.unwrap_or_default(),
            Err(e) => {
                errors.push(format!("{label}: sudo: {e}"));
                continue;
            }
        };
        // cloud-init's defaults for a default user the image lacks; an image's own
        // default user keeps what the image gave it.
        if is_default && !exists {
            if spec.groups.is_none() {
                groups = DEFAULT_USER_GROUPS
                    .iter()
                    .filter(|g| acc.has_group(g) || plan.new_groups.iter().any(|n| n == *g))
                    .map(|g| g.to_string())
                    .collect();
            }
            if spec.sudo.is_none() {
                sudo = vec![DEFAULT_USER_SUDO.to_string()];
            }
        }
        let create = spec.create_groups.unwrap_or(true);
        let mut bad_group = false;
        for g in &groups {
            if let Err(e) = check_name(g) {
                errors.push(format!("{label}: groups: {e}"));
                bad_group = true;
            } else if !acc.has_group(g) && !plan.new_groups.contains(g) {
                if create {
                    plan.new_groups.push(g.clone());
                } else {
                    errors.push(format!(
                        "{label}: group `{g}` does not exist (and create_groups is false)"
                    ));
                    bad_group = true;
                }
            }
        }
        if bad_group {
            continue;
        }
        for rule in &sudo {
            if rule.contains(['\n', '\r']) || rule.trim().is_empty() {
                errors.push(format!(
                    "{label}: sudo rule {rule:?} must be one non-empty line"
                ));
            }
        }
        plan.users.push(UserPlan {
            label,
            name,
            spec,
            exists,
            groups,
            sudo,
        });
    }

    for (group, members) in group_members {
        for m in members {
            let known = acc.user(&m).is_some() || plan.users.iter().any(|u| u.name == m);
            if !known {
                warnings.push(format!(
                    "groups: {group}: member `{m}` does not exist; not added"
                ));
            } else if !acc.is_member(&group, &m)
                && !plan.members.contains(&(group.clone(), m.clone()))
            {
                plan.members.push((group.clone(), m));
            }
        }
    }

    if plan.users.iter().any(|u| !u.sudo.is_empty()) {
        match dir.read_regular(Path::new("/etc/sudoers"), 1 << 20) {
            Ok(Some(text)) => {
                let text = String::from_utf8_lossy(&text);
                let includes = text.lines().any(|l| {
                    let l = l.trim();
                    (l.starts_with("@includedir") || l.starts_with("#includedir"))
                        && l.split_whitespace().nth(1) == Some(SUDOERS_DIR)
                });
                if !includes {
                    warnings.push(format!(
                        "/etc/sudoers does not include {SUDOERS_DIR}: the sudo rules written there are not read"
                    ));
                }
            }
            Ok(None) => warnings.push(
                "/etc/sudoers does not exist (sudo not installed?): sudo rules are written but unused"
                    .to_string(),
            ),
            Err(e) => warnings.push(format!("/etc/sudoers: {e}")),
        }
    }

    if errors.is_empty() {
        Ok(plan)
    } else {
        Err(ModuleError::Invalid(format!(
            "nothing was changed: {}",
            errors.join("; ")
        )))
    }
}

/// Checks one user's settings against the accounts and the other planned users.
fn check_user(
    name: &str,
    spec: &UserSpec,
    exists: bool,
    acc: &Accounts,
    plan: &Plan,
    uids_wanted: &mut BTreeMap<u32, String>,
    label: &str,
) -> Result<(), String> {
    let fail = |e: String| Err(format!("{label}: {e}"));
    if let Err(e) = check_name(name) {
        return fail(e);
    }
    for (key, val) in [
        ("gecos", &spec.gecos),
        ("homedir", &spec.homedir),
        ("shell", &spec.shell),
        ("passwd", &spec.passwd),
        ("hashed_passwd", &spec.hashed_passwd),
        ("plain_text_passwd", &spec.plain_text_passwd),
    ] {
        if let Some(v) = val
            && v.contains([':', '\n', '\r', '\0'])
        {
            return fail(format!("{key} must not contain `:` or a line break"));
        }
    }
    for (key, val) in [("homedir", &spec.homedir), ("shell", &spec.shell)] {
        if let Some(v) = val
            && !v.starts_with('/')
        {
            return fail(format!("{key} must be an absolute path, not {v:?}"));
        }
    }
    if spec.passwd.is_some() && spec.hashed_passwd.is_some() {
        return fail("give passwd or hashed_passwd, not both".into());
    }
    if let Some(d) = &spec.expiredate
        && !is_date(d)
    {
        return fail(format!("expiredate must be YYYY-MM-DD, not {d:?}"));
    }
    if let Some(n) = &spec.inactive
        && n.text().parse::<i64>().map_or(true, |v| v < -1)
    {
        return fail(format!(
            "inactive must be a number of days, not {:?}",
            n.text()
        ));
    }
    if let Some(uid) = &spec.uid {
        let Ok(uid) = uid.text().parse::<u32>() else {
            return fail(format!("uid must be a number, not {:?}", uid.text()));
        };
        if let Some(other) = acc.user_by_uid(uid)
            && other != name
        {
            return fail(format!("uid {uid} is already taken by user `{other}`"));
        }
        if let Some(other) = uids_wanted.get(&uid) {
            return fail(format!("uid {uid} is also wanted by {other}"));
        }
        if let Some(u) = acc.user(name)
            && u.uid != uid
        {
            return fail(format!(
                "the user exists with uid {} (stoke does not change uids)",
                u.uid
            ));
        }
        uids_wanted.insert(uid, label.to_string());
    }
    if let Some(g) = &spec.primary_group {
        if let Err(e) = check_name(g) {
            return fail(format!("primary_group: {e}"));
        }
        // useradd makes the group named after the user itself; any other must exist.
        let planned = plan.new_groups.iter().any(|n| n == g);
        if !acc.has_group(g) && !planned && (g != name || exists) {
            return fail(format!(
                "primary_group `{g}` does not exist (add it to `groups:`)"
            ));
        }
    }
    Ok(())
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// A user or group name the shadow tools and sudoers accept unquoted: letters,
/// digits, `_`, `.`, `-` (not first), an optional final `$` (Samba machines), at
/// most 32 bytes, not all digits.
pub fn check_name(name: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "`{name}` is not a valid name (letters, digits, `_`, `.`, `-`, not starting with `-` \
             or a digit-only name, at most 32 characters)"
        ))
    };
    let body = name.strip_suffix('$').unwrap_or(name);
    if body.is_empty()
        || name.len() > 32
        || body.starts_with('-')
        || body == "."
        || body == ".."
        || body.bytes().all(|c| c.is_ascii_digit())
        || !body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    {
        return bad();
    }
    Ok(())
}

/// `/etc/sudoers.d/90-stoke-<name>`: sudo skips files with a `.` in their name.
fn sudoers_path(name: &str) -> PathBuf {
    Path::new(SUDOERS_DIR).join(format!("90-stoke-{}", name.replace('.', "_")))
}

fn sudoers_text(name: &str, rules: &[String]) -> String {
    let mut s =
        format!("# Written by stoke (users-groups) from the `sudo` setting of user {name}.\n");
    for r in rules {
        s.push_str(&format!("{name} {}\n", r.trim()));
    }
    s
}

/// Every rule through `visudo -cf -` before anything is changed.
async fn check_sudo_rules(ctx: &Context, plan: &Plan) -> Result<(), ModuleError> {
    let mut errors = Vec::new();
    for u in plan.users.iter().filter(|u| !u.sudo.is_empty()) {
        let cmd = Cmd::new(ctx.tool(tools::VISUDO), ["-c", "-q", "-f", "-"])
            .stdin(sudoers_text(&u.name, &u.sudo))
            .timeout(CMD_TIMEOUT);
        let out = match ctx.system.run(&cmd).await {
            Ok(o) => o,
            Err(e) => {
                errors.push(format!("{}: sudo rules cannot be checked: {e}", u.label));
                continue;
            }
        };
        if !out.success() {
            let why = out.tail(5).replace("stdin:", "rule:");
            errors.push(format!(
                "{}: sudo rule refused by visudo: {}",
                u.label,
                why.trim()
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ModuleError::Invalid(format!(
            "nothing was changed: {}",
            errors.join("; ")
        )))
    }
}

#[derive(Debug, Default)]
struct Done {
    groups_created: Vec<String>,
    users_created: Vec<String>,
    users_existing: Vec<String>,
    groups_added: BTreeMap<String, Vec<String>>,
    sudoers: Vec<String>,
}

/// `--root DIR` for the shadow tools when the root is not `/`.
fn root_args(ctx: &Context) -> Vec<String> {
    if ctx.root.is_host() {
        Vec::new()
    } else {
        vec!["--root".into(), ctx.root.dir().display().to_string()]
    }
}

async fn run_checked(ctx: &Context, cmd: Cmd, what: &str) -> Result<(), ModuleError> {
    let out = ctx.system.run(&cmd).await?;
    out.check(&cmd)
        .map(|_| ())
        .map_err(|e| ModuleError::Other(format!("{what}: {e}")))
}

async fn apply(
    ctx: &Context,
    dir: &RootDir,
    plan: &Plan,
    acc: &Accounts,
    warnings: &mut Vec<String>,
) -> Result<Done, ModuleError> {
    let mut done = Done::default();
    let root = root_args(ctx);
    let tool = |t: &str| ctx.tool(t);

    for g in &plan.new_groups {
        let mut args = root.clone();
        args.push(g.clone());
        run_checked(
            ctx,
            Cmd::new(tool(tools::GROUPADD), args).timeout(CMD_TIMEOUT),
            &format!("creating group {g}"),
        )
        .await?;
        done.groups_created.push(g.clone());
    }

    for u in &plan.users {
        let s = &u.spec;
        let hash = s.hashed_passwd.as_ref().or(s.passwd.as_ref());
        if u.exists {
            let missing: Vec<String> = u
                .groups
                .iter()
                .filter(|g| !acc.is_member(g, &u.name))
                .cloned()
                .collect();
            if !missing.is_empty() {
                let mut args = root.clone();
                args.extend(["--append".into(), "--groups".into(), missing.join(",")]);
                args.push(u.name.clone());
                run_checked(
                    ctx,
                    Cmd::new(tool(tools::USERMOD), args).timeout(CMD_TIMEOUT),
                    &format!("{}: adding groups", u.label),
                )
                .await?;
                done.groups_added.insert(u.name.clone(), missing);
            }
            done.users_existing.push(u.name.clone());
        } else {
            let mut args = root.clone();
            let mut opt = |k: &str, v: Option<String>| {
                if let Some(v) = v {
                    args.push(k.to_string());
                    args.push(v);
                }
            };
            opt("--comment", s.gecos.clone());
            opt("--home-dir", s.homedir.clone());
            // A group named after the user already there: useradd would refuse to make it.
            let gid = s
                .primary_group
                .clone()
                .or_else(|| (!s.no_user_group && acc.has_group(&u.name)).then(|| u.name.clone()));
            opt("--gid", gid);
            opt(
                "--groups",
                (!u.groups.is_empty()).then(|| u.groups.join(",")),
            );
            opt("--shell", s.shell.clone());
            opt("--uid", s.uid.as_ref().map(|n| n.text()));
            opt("--expiredate", s.expiredate.clone());
            opt("--inactive", s.inactive.as_ref().map(|n| n.text()));
            if s.system {
                args.push("--system".into());
            }
            if s.no_create_home || (s.system && s.homedir.is_none()) {
                args.push("--no-create-home".into());
            } else {
                args.push("--create-home".into());
            }
            if s.no_user_group {
                args.push("--no-user-group".into());
            }
            if s.no_log_init {
                args.push("--no-log-init".into());
            }
            args.push(u.name.clone());
            run_checked(
                ctx,
                Cmd::new(tool(tools::USERADD), args).timeout(CMD_TIMEOUT),
                &format!("{}: creating the user", u.label),
            )
            .await?;
            done.users_created.push(u.name.clone());
        }
        // Passwords on stdin: never in an argv (logged, recorded, visible in ps).
        let mut password_set = false;
        if let Some(h) = hash {
            let mut args = root.clone();
            args.push("--encrypted".into());
            run_checked(
                ctx,
                Cmd::new(tool(tools::CHPASSWD), args)
                    .stdin(format!("{}:{h}\n", u.name))
                    .timeout(CMD_TIMEOUT),
                &format!("{}: setting the password hash", u.label),
            )
            .await?;
            password_set = true;
        } else if let Some(p) = &s.plain_text_passwd {
            run_checked(
                ctx,
                Cmd::new(tool(tools::CHPASSWD), root.clone())
                    .stdin(format!("{}:{p}\n", u.name))
                    .timeout(CMD_TIMEOUT),
                &format!("{}: setting the password", u.label),
            )
            .await?;
            password_set = true;
        }
        // useradd leaves a new account without a password locked already; lock
        // what was just set (cloud-init's default), or an existing user when asked.
        let lock = s.lock_passwd.unwrap_or(true);
        if lock && (password_set || (u.exists && s.lock_passwd == Some(true))) {
            let mut args = root.clone();
            args.extend(["--lock".into(), u.name.clone()]);
            run_checked(
                ctx,
                Cmd::new(tool(tools::USERMOD), args).timeout(CMD_TIMEOUT),
                &format!("{}: locking the password", u.label),
            )
            .await?;
        }
    }

    for (group, member) in &plan.members {
        let mut args = root.clone();
        args.extend([
            "--append".into(),
            "--groups".into(),
            group.clone(),
            member.clone(),
        ]);
        run_checked(
            ctx,
            Cmd::new(tool(tools::USERMOD), args).timeout(CMD_TIMEOUT),
            &format!("groups: adding {member} to {group}"),
        )
        .await?;
        done.groups_added
            .entry(member.clone())
            .or_default()
            .push(group.clone());
    }

    let sudo_users: Vec<&UserPlan> = plan.users.iter().filter(|u| !u.sudo.is_empty()).collect();
    if !sudo_users.is_empty() {
        dir.create_dir_all(Path::new(SUDOERS_DIR), 0o750)
            .map_err(|e| ModuleError::io("creating", ctx.host_path(SUDOERS_DIR), e))?;
    }
    for u in sudo_users {
        let path = sudoers_path(&u.name);
        let text = sudoers_text(&u.name, &u.sudo);
        let current = dir.read_regular(&path, 1 << 20).ok().flatten();
        if current.as_deref() != Some(text.as_bytes()) {
            dir.write_atomic(
                &path,
                text.as_bytes(),
                0o440,
                Some((0, 0)),
                ctx.system.as_ref(),
            )
            .map_err(|e| ModuleError::io("writing", ctx.host_path(&path), e))?;
        }
        done.sudoers.push(path.display().to_string());
    }
    if !ctx.system.executes() && !done.users_created.is_empty() {
        warnings.push(
            "commands were recorded, not run (sandbox): the users were not really created".into(),
        );
    }
    Ok(done)
}

fn summary(plan: &Plan, done: &Done) -> String {
    let mut parts = Vec::new();
    if !done.groups_created.is_empty() {
        parts.push(format!(
            "groups created: {}",
            done.groups_created.join(", ")
        ));
    }
    if !done.users_created.is_empty() {
        parts.push(format!("users created: {}", done.users_created.join(", ")));
    }
    if !done.users_existing.is_empty() {
        parts.push(format!("existing: {}", done.users_existing.join(", ")));
    }
    if !done.sudoers.is_empty() {
        parts.push(format!("sudo rules: {}", done.sudoers.len()));
    }
    let who = match &plan.default_user {
        Some(d) => format!("default user {d}"),
        None => "no default user".into(),
    };
    if parts.is_empty() {
        format!("users: nothing to do ({who})")
    } else {
        format!("users: {} ({who})", parts.join("; "))
    }
}
