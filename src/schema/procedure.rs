//! The shape of a procedure file, one type per mapping the loader reads (same keys as the
//! `Fields::new` lists in `procedure/read/` and `action/`; `tests.rs` checks it).

use std::collections::BTreeMap;

use schemars::JsonSchema;

use super::scalars::{Duration, DurationOrTemplate, Flag, FlagOrTemplate, Nothing, Scalar};
use crate::procedure::INCLUDE_PHASE_KEYS;

/// A medic procedure: parameters and a tree of phases.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Procedure {
    /// The procedure's name; a file in `plans/` must be named after it (`NAME.yaml`).
    pub name: String,
    /// What the procedure does, shown by `medic procedures list`.
    pub description: Option<String>,
    /// Parameters given with `medic start NAME --param KEY=VALUE`, by name.
    pub params: Option<BTreeMap<String, ParamEntry>>,
    /// The phases, run in order unless `requires:` or `parallel:` say otherwise.
    #[schemars(length(min = 1))]
    pub phases: Vec<Phase>,
    /// Who must approve an operation of this procedure before it executes
    /// (`medic plan approve`).
    pub approval: Option<Approval>,
}

/// `approval: {required: true, count: 1, distinct_from_creator: true}`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Approval {
    /// Whether approval is required (default true when `approval:` is given).
    pub required: Option<Flag>,
    /// How many people must approve (1 to 10, default 1).
    #[schemars(range(min = 1, max = 10))]
    pub count: Option<u32>,
    /// The operation's creator's own approval does not count.
    pub distinct_from_creator: Option<Flag>,
}

#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum ParamEntry {
    Settings(Param),
    /// An optional text parameter.
    Plain(Nothing),
}

/// A parameter's settings; an empty value means an optional text parameter.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Param {
    /// What the parameter is for.
    pub description: Option<String>,
    /// Whether `medic start` refuses to go on without it.
    pub required: Option<Flag>,
    /// The value when none is given; a list makes it a list parameter.
    pub default: Option<ParamDefault>,
    /// A regular expression the whole value (each item of a list) must match.
    pub pattern: Option<String>,
    /// Whether the value is a secret: kept out of history, logs and output.
    pub secret: Option<Flag>,
    /// `string` (the default) or `list` (given comma-separated or as a YAML list).
    #[schemars(rename = "type")]
    pub kind: Option<ParamKind>,
}

#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum ParamDefault {
    One(Scalar),
    List(Vec<Scalar>),
}

#[derive(JsonSchema)]
#[schemars(rename_all = "lowercase")]
pub enum ParamKind {
    String,
    List,
}

/// One phase: an action (exactly one of the action keys), a group (`phases:`), or an
/// `include:` of another procedure.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, transform = phase_rules)]
pub struct Phase {
    /// The phase's id: lowercase letters, digits, `-`, `_` or `.`; its path is `/group/id`.
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$"))]
    pub id: String,
    /// What the phase does, for the plan table (a template).
    pub description: Option<String>,
    /// Phases that must have completed first: paths (`/etcd/remove`) or sibling ids.
    pub requires: Option<OneOrMany>,
    /// Run the phases of this group (or foreach) at the same time.
    pub parallel: Option<Flag>,
    /// With `parallel: true`, how many run at once.
    #[schemars(range(min = 1))]
    pub max_parallel: Option<u64>,
    /// Repeat this phase for each item: a list, or an expression such as "{{ workers }}".
    pub foreach: Option<Foreach>,
    /// The name of the foreach item inside the phase (default `item`).
    #[schemars(rename = "as")]
    pub item_name: Option<String>,
    /// The phases of this group.
    pub phases: Option<Vec<Phase>>,
    /// The action that undoes this phase, run by `medic plan rollback`.
    pub rollback: Option<Rollback>,
    /// Names set from the action's result: `{member_id: json.id}`, or
    /// `{token: {from: "stdout | trim", secret: true}}` for a secret.
    pub capture: Option<BTreeMap<String, super::capture::Capture>>,
    /// How long the action may take.
    pub timeout: Option<Duration>,
    /// How many times a failed action is tried again (at most 100).
    #[schemars(range(max = 100))]
    pub retries: Option<u32>,
    /// The pause between tries.
    pub retry_delay: Option<Duration>,
    /// Whether running the action again after an interruption is safe.
    pub idempotent: Option<Flag>,
    /// The operator confirms before the action runs: medic shows the rendered action and asks
    /// for `yes` on a terminal; `--yes` answers it; without either the run stops there (exit 3).
    pub confirm: Option<Flag>,
    /// The action runs only when this holds; otherwise the phase is skipped.
    pub when: Option<When>,
    /// Runs another procedure's phases here.
    pub include: Option<Include>,
    /// Runs a command on this machine.
    pub run: Option<Run>,
    /// Runs a command on nodes of the inventory.
    pub ssh: Option<Ssh>,
    /// An etcd membership operation.
    pub etcd: Option<Etcd>,
    /// A Kubernetes node operation.
    pub kube: Option<Kube>,
    /// A condition that must hold before going on.
    pub check: Option<Check>,
    /// Waits for the operator.
    pub pause: Option<String>,
    /// Runs a command until it succeeds.
    pub wait: Option<Wait>,
    /// Checks the SSH host key a node offers; trusts a new one only if it is the expected one.
    pub ssh_host_key: Option<super::capture::SshHostKey>,
    /// What a failure of this phase means to `medic status`: name, severity, finding, remedy.
    pub probe: Option<super::probe::Probe>,
    /// A failure is recorded and the run goes on.
    pub may_fail: Option<Flag>,
}

/// What a phase does is exactly one of: an action, `phases:` or `include:`; and a phase with
/// `include:` has only the keys that apply to it.
fn phase_rules(schema: &mut schemars::Schema) {
    let one_of: Vec<serde_json::Value> = crate::action::ACTION_KINDS
        .iter()
        .chain(&["phases", "include"])
        .map(|key| serde_json::json!({"required": [key]}))
        .collect();
    schema.insert("oneOf".into(), one_of.into());
    schema.insert("if".into(), serde_json::json!({"required": ["include"]}));
    schema.insert(
        "then".into(),
        serde_json::json!({"propertyNames": {"enum": INCLUDE_PHASE_KEYS}}),
    );
}

/// Exactly one of the properties, except `keep`, must be given (`oneOf` of `required`).
fn exactly_one_of(schema: &mut schemars::Schema, keep: &[&str]) {
    let one_of: Vec<serde_json::Value> = schema
        .get("properties")
        .and_then(serde_json::Value::as_object)
        .expect("an object schema")
        .keys()
        .filter(|k| !keep.contains(&k.as_str()))
        .map(|key| serde_json::json!({"required": [key]}))
        .collect();
    schema.insert("oneOf".into(), one_of.into());
}

fn exactly_one_operation(schema: &mut schemars::Schema) {
    exactly_one_of(schema, &["transport", "via"]);
}

fn exactly_one_property(schema: &mut schemars::Schema) {
    exactly_one_of(schema, &[]);
}

fn exactly_one_member(schema: &mut schemars::Schema) {
    exactly_one_of(schema, &["timeout"]);
}

/// One action that undoes the phase.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, extend("minProperties" = 1, "maxProperties" = 1))]
pub struct Rollback {
    pub run: Option<Run>,
    pub ssh: Option<Ssh>,
    pub etcd: Option<Etcd>,
    pub kube: Option<Kube>,
    pub check: Option<Check>,
    pub pause: Option<String>,
    pub wait: Option<Wait>,
    pub ssh_host_key: Option<super::capture::SshHostKey>,
}

#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum Foreach {
    Expression(String),
    Items(Vec<Scalar>),
}

#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum When {
    Expression(String),
    Condition(Condition),
}

/// `when:` with the reason shown when the phase is skipped.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Condition {
    /// The expression that must hold.
    pub that: String,
    /// Why the phase is skipped when it does not (a template).
    pub reason: Option<String>,
}

/// `include: {procedure: NAME, with: {param: value}}`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Include {
    /// The name of the procedure to include.
    pub procedure: String,
    /// Values for the included procedure's parameters (templates).
    #[schemars(rename = "with")]
    pub with_params: Option<BTreeMap<String, Scalar>>,
}

#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum Run {
    Command(String),
    WithEnv(RunWithEnv),
}

/// `run:` with environment variables (exported in the script, in no command line).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RunWithEnv {
    /// The shell command (a template; values are shell-quoted).
    pub command: String,
    /// Variable names to values (templates).
    pub env: Option<BTreeMap<String, Scalar>>,
}

/// `ssh:` runs a command on nodes of the inventory.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Ssh {
    /// A node, a list of nodes, or `{role: NAME}`.
    pub on: SshOn,
    /// The shell command (a template; values are shell-quoted).
    pub run: String,
    /// Run it through sudo (default: the inventory's ssh.sudo).
    pub sudo: Option<Flag>,
    /// Variable names to values (templates).
    pub env: Option<BTreeMap<String, Scalar>>,
    /// How long each node's command may take.
    pub timeout: Option<Duration>,
    /// How many nodes at once.
    #[schemars(range(min = 1))]
    pub max_parallel: Option<u64>,
}

#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum SshOn {
    Node(String),
    Nodes(Vec<String>),
    Role(OnRole),
}

/// The nodes of the inventory with a role.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct OnRole {
    pub role: String,
}

/// `check:` an expression, or `{that, message}`.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum Check {
    Expression(String),
    WithMessage(CheckWithMessage),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CheckWithMessage {
    /// The expression that must hold.
    pub that: String,
    /// Why the plan stops when it does not (a template).
    pub message: Option<String>,
}

/// `wait:` runs a command until it succeeds.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Wait {
    /// The shell command.
    pub run: String,
    /// How long to keep trying (default 5m).
    pub timeout: Option<Duration>,
    /// The pause between tries (default 5s).
    pub interval: Option<Duration>,
}

/// `etcd:` exactly one operation, and how to reach etcd.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, transform = exactly_one_operation)]
pub struct Etcd {
    /// Lists the members (and finds one by name).
    pub member_list: Option<EtcdMemberListBody>,
    /// Checks every member's health.
    pub health: Option<Nothing>,
    /// Shows every member's status.
    pub status: Option<Nothing>,
    /// Removes a member (refused unless the survivors keep quorum).
    pub member_remove: Option<EtcdMemberRemove>,
    /// Adds a member.
    pub member_add: Option<EtcdMemberAdd>,
    /// Promotes a learner.
    pub member_promote: Option<EtcdMemberPromote>,
    /// Saves a snapshot on this machine.
    pub snapshot: Option<EtcdSnapshot>,
    /// Moves leadership to a member (node, member name or id).
    pub move_leader: Option<EtcdMoveLeader>,
    /// Lists the active alarms (NOSPACE, CORRUPT).
    pub alarm_list: Option<Nothing>,
    /// Clears every active alarm.
    pub alarm_disarm: Option<Nothing>,
    /// Defragments one member.
    pub defragment: Option<EtcdDefragment>,
    /// Reads a snapshot file on this machine: revision, keys, hash, age.
    pub snapshot_status: Option<EtcdSnapshotStatus>,
    /// `direct` (default) or `ssh` (etcdctl on a node).
    pub transport: Option<EtcdTransport>,
    /// The node to run etcdctl on for the ssh transport.
    pub via: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(rename_all = "lowercase")]
pub enum EtcdTransport {
    Direct,
    Ssh,
}

#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum EtcdMemberListBody {
    Settings(EtcdMemberList),
    All(Nothing),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EtcdMemberList {
    pub name: Option<String>,
}

/// Exactly one of `name`, `node` or `id`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, transform = exactly_one_property)]
pub struct EtcdMemberRemove {
    pub name: Option<String>,
    pub node: Option<String>,
    /// The member id, in hex as etcdctl prints it.
    pub id: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EtcdMemberAdd {
    pub name: String,
    pub peer_urls: OneOrMany,
    /// Add it as a non-voting learner.
    pub learner: Option<Flag>,
}

/// Exactly one of `name` or `id`, and how long to try.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, transform = exactly_one_member)]
pub struct EtcdMemberPromote {
    pub name: Option<String>,
    pub id: Option<String>,
    /// How long to keep retrying until the learner is in sync.
    pub timeout: Option<Duration>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EtcdSnapshot {
    /// Where to save it on this machine.
    pub path: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EtcdMoveLeader {
    /// A node, a member name or a member id (hex).
    pub to: String,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EtcdDefragment {
    /// A node, a member name or a member id (hex).
    pub member: String,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EtcdSnapshotStatus {
    /// The snapshot file on this machine.
    pub path: String,
}

/// `kube:` exactly one node operation.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, extend("minProperties" = 1, "maxProperties" = 1))]
pub struct Kube {
    /// Marks a node unschedulable.
    pub cordon: Option<String>,
    /// Marks a node schedulable.
    pub uncordon: Option<String>,
    /// Deletes the Node object.
    pub delete_node: Option<String>,
    /// Reads one node.
    pub node_info: Option<String>,
    /// Lists the nodes.
    pub nodes: Option<Nothing>,
    /// Cordons a node and evicts its pods.
    pub drain: Option<KubeDrain>,
    /// Waits until a node is Ready (and runs a kubelet version).
    pub wait_ready: Option<KubeWaitReady>,
    /// Waits until a Node object is gone.
    pub wait_gone: Option<KubeWaitGone>,
    pub label: Option<KubeLabel>,
    pub unlabel: Option<KubeUnlabel>,
    pub taint: Option<KubeTaint>,
    pub untaint: Option<KubeUntaint>,
    /// Lists one namespace's pods (read-only).
    pub pods: Option<KubePods>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct KubePods {
    /// The namespace (e.g. kube-system).
    pub namespace: String,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct KubeDrain {
    pub node: String,
    /// Default 10m.
    pub timeout: Option<DurationOrTemplate>,
    pub delete_emptydir_data: Option<FlagOrTemplate>,
    pub ignore_daemonsets: Option<FlagOrTemplate>,
    pub force: Option<FlagOrTemplate>,
    /// Seconds each pod gets to stop.
    pub grace_period: Option<u64>,
    /// Delete pods instead of evicting them (ignores PodDisruptionBudgets).
    pub disable_eviction: Option<FlagOrTemplate>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct KubeWaitReady {
    pub node: String,
    /// Default 10m.
    pub timeout: Option<DurationOrTemplate>,
    /// The kubelet version the node must report.
    pub version: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct KubeWaitGone {
    pub node: String,
    /// Default 5m.
    pub timeout: Option<DurationOrTemplate>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct KubeLabel {
    pub node: String,
    pub labels: BTreeMap<String, Scalar>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct KubeUnlabel {
    pub node: String,
    pub keys: OneOrMany,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct KubeTaint {
    pub node: String,
    pub key: String,
    pub value: Option<Scalar>,
    /// Default NoSchedule.
    pub effect: Option<TaintEffect>,
}

#[derive(JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct KubeUntaint {
    pub node: String,
    pub key: String,
}
