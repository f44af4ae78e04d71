//! The `lifecycle:` section.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use stoke_api::ModuleError;
use stoke_aws::Access;

/// The tag Auto Scaling puts on the instances it launches; the datasource reads it
/// when the configuration mentions `lifecycle` (src/datasource, `needs`).
pub const GROUP_TAG: &str = "aws:autoscaling:groupName";

/// The module's top-level keys.
#[derive(Deserialize, JsonSchema, Default, Debug)]
#[serde(default)]
pub struct LifecycleConfig {
    /// Complete the Auto Scaling launch lifecycle hook when the boot is done (docs/ready.md).
    pub lifecycle: Option<Section>,
}

/// `LifecycleActionResult`: what the group does with the instance.
#[derive(Deserialize, Serialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookResult {
    /// Put the instance in service.
    CONTINUE,
    /// Terminate it (the group launches another).
    ABANDON,
}

impl HookResult {
    pub fn as_str(self) -> &'static str {
        match self {
            HookResult::CONTINUE => "CONTINUE",
            HookResult::ABANDON => "ABANDON",
        }
    }
}

#[derive(Deserialize, JsonSchema, Clone, Debug)]
#[serde(default, deny_unknown_fields)]
pub struct Section {
    /// The launch hook's name (`LifecycleHookName`).
    pub hook_name: String,
    /// The Auto Scaling group (`AutoScalingGroupName`). Default: the instance's
    /// `aws:autoscaling:groupName` tag (instance metadata tags must be on).
    pub group_name: Option<String>,
    /// The result when a module of the boot failed (checks included).
    pub on_failure: HookResult,
    /// Send `RecordLifecycleActionHeartbeat` this often while the network stage runs
    /// (a blocking Puppet run); 0: never.
    pub heartbeat_seconds: u64,
    /// Total time for the completion, retries included.
    pub budget_seconds: u64,
    /// Upper bound of one backoff sleep (full jitter).
    pub max_backoff_seconds: f64,
    /// Another Auto Scaling endpoint (tests, proxies).
    pub endpoint_url: Option<String>,
    /// Default: the instance's region.
    pub region: Option<String>,
    /// Static credentials; default: the standard AWS chain (instance profile through IMDS).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

impl Default for Section {
    fn default() -> Self {
        Section {
            hook_name: String::new(),
            group_name: None,
            // A boot that failed must not take traffic: the group replaces the instance.
            on_failure: HookResult::ABANDON,
            heartbeat_seconds: 0,
            budget_seconds: 60,
            max_backoff_seconds: 5.0,
            endpoint_url: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
        }
    }
}

/// The values a request needs, checked before any is sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub hook_name: String,
    pub group_name: String,
    pub instance_id: String,
    pub region: String,
}

impl Section {
    pub fn target(&self, instance: &stoke_api::InstanceData) -> Result<Target, ModuleError> {
        let invalid = |m: &str| Err(ModuleError::Invalid(format!("lifecycle: {m}")));
        if self.hook_name.trim().is_empty() {
            return invalid("`hook_name` is required");
        }
        let Some(group_name) = self
            .group_name
            .clone()
            .or_else(|| instance.tags.get(GROUP_TAG).cloned())
            .filter(|g| !g.trim().is_empty())
        else {
            return invalid(
                "no `group_name`, and the instance has no aws:autoscaling:groupName tag in its \
                 metadata (turn instance metadata tags on, or set `group_name`)",
            );
        };
        if let Err(e) = self.access().check() {
            return invalid(&e);
        }
        if instance.instance_id.trim().is_empty() {
            return invalid("the datasource gave no instance id");
        }
        let Some(region) = self
            .region
            .clone()
            .or_else(|| instance.region.clone())
            .filter(|r| !r.trim().is_empty())
        else {
            return invalid("no region: the datasource gave none; set `region`");
        };
        Ok(Target {
            hook_name: self.hook_name.trim().to_string(),
            group_name: group_name.trim().to_string(),
            instance_id: instance.instance_id.to_string(),
            region,
        })
    }

    /// The keys every AWS-calling section has.
    pub fn access(&self) -> Access<'_> {
        Access {
            endpoint_url: self.endpoint_url.as_deref(),
            access_key_id: self.access_key_id.as_deref(),
            secret_access_key: self.secret_access_key.as_deref(),
            session_token: self.session_token.as_deref(),
            budget_seconds: self.budget_seconds,
            max_backoff_seconds: self.max_backoff_seconds,
        }
    }
}
