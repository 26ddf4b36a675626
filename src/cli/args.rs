//! Clap definitions of every command and option: what `medic --help` shows.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "medic",
    version,
    about = "Plan-based remediation runner for Kubernetes clusters",
    long_about = "Runs recovery procedures (plans/*.yaml) as plans of phases that can be executed, resumed, \
                  rolled back and reviewed as a dry-run, with every step recorded in ./state."
)]
pub(crate) struct Cli {
    /// Directory of the state database.
    #[arg(
        long,
        global = true,
        env = "MEDIC_STATE_DIR",
        default_value = "./state"
    )]
    pub(crate) state_dir: PathBuf,
    /// Cluster inventory (nodes, SSH, kubeconfig, etcd).
    #[arg(
        long,
        global = true,
        env = "MEDIC_INVENTORY",
        default_value = "./cluster.yaml"
    )]
    pub(crate) inventory: PathBuf,
    /// Extra procedures; files here add to or override the built-in ones by name.
    #[arg(long, global = true, env = "MEDIC_PLANS_DIR")]
    pub(crate) plans_dir: Option<PathBuf>,
    /// Most phases a plan may have (includes and foreach expanded); a larger one is refused.
    #[arg(long, global = true, env = "MEDIC_MAX_PHASES", value_name = "N",
          default_value_t = crate::procedure::DEFAULT_MAX_PHASES,
          value_parser = clap::value_parser!(usize))]
    pub(crate) max_phases: usize,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Text)]
    pub(crate) output: Format,
    /// Keep operations in a management etcd shared by the team instead of --state-dir:
    /// etcd://HOST:PORT[,HOST:PORT...][/PREFIX] (never the etcd of the cluster being repaired).
    /// Give it before the command (`plan set` has its own --state), or set MEDIC_STATE.
    #[arg(
        long = "state",
        env = "MEDIC_STATE",
        value_name = "etcd://HOST:PORT[/PREFIX]"
    )]
    pub(crate) state_url: Option<String>,
    /// CA certificate of the etcd state store (TLS).
    #[arg(long, global = true, env = "MEDIC_STATE_CA", value_name = "FILE")]
    pub(crate) state_ca: Option<PathBuf>,
    /// Client certificate for the etcd state store (with --state-key).
    #[arg(
        long,
        global = true,
        env = "MEDIC_STATE_CERT",
        value_name = "FILE",
        requires = "state_key"
    )]
    pub(crate) state_cert: Option<PathBuf>,
    /// Client key for the etcd state store (with --state-cert).
    #[arg(
        long,
        global = true,
        env = "MEDIC_STATE_KEY",
        value_name = "FILE",
        requires = "state_cert"
    )]
    pub(crate) state_key: Option<PathBuf>,
    /// Key file that encrypts secret parameter values in the etcd state store (created, mode
    /// 0600, on first use; keep it off etcd and share it with the team like a password).
    #[arg(long, global = true, env = "MEDIC_STATE_KEY_FILE", value_name = "FILE")]
    pub(crate) state_key_file: Option<PathBuf>,
    /// Seconds an executor's etcd lease outlives its last keep-alive: how long a dead
    /// executor's phase shows in progress before it shows interrupted.
    #[arg(long, global = true, env = "MEDIC_STATE_LEASE_TTL", value_name = "SECS",
          default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub(crate) state_lease_ttl: u64,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// List the procedures, or show one.
    Procedures {
        #[command(subcommand)]
        show: Option<ProceduresCommand>,
    },
    /// Create an operation from a procedure and (unless --manual) run it.
    Start(StartArgs),
    /// List operations.
    Operations,
    /// Show the plan of an operation, or act on it.
    Plan(PlanArgs),
    /// The local rehearsal cluster: real etcd members, one sshd serving every node address, and
    /// the Kubernetes API emulator; break it on purpose and rehearse a procedure on it.
    Drill {
        /// The drill's directory (inventory, kubeconfig, keys, logs).
        #[arg(long, global = true, env = "MEDIC_DRILL_DIR")]
        dir: Option<PathBuf>,
        #[command(subcommand)]
        command: DrillCommand,
    },
    /// Print a shell completion script: `source <(medic completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write man pages for medic and each subcommand into DIR.
    Man {
        #[arg(default_value = ".", value_hint = clap::ValueHint::DirPath)]
        dir: PathBuf,
    },
    /// Completion candidates, one per line (what the completion scripts call).
    #[command(name = "__complete", hide = true)]
    Complete {
        #[arg(value_enum)]
        what: Candidates,
        /// Operation whose phases to list (ID or unique prefix); defaults as `medic plan` does.
        #[arg(long)]
        operation: Option<String>,
    },
    /// Print the JSON Schema of procedure files or of the inventory, for editors and CI.
    Schema {
        #[arg(value_enum)]
        document: Document,
    },
    /// Follow a running operation live (the same as `medic plan --tail`): the plan as it
    /// changes and the output of the running phase; exits with the run's exit code.
    Attach {
        /// Operation ID (or unique prefix); defaults to the single active operation.
        #[arg(long)]
        operation: Option<String>,
    },
    /// The SSH master connections medic keeps open between runs (`ssh.persist`).
    Ssh {
        #[command(subcommand)]
        command: SshCommand,
    },
    /// Run the health probes on every node and component: what is wrong, how bad, and which
    /// `medic start …` repairs it (exit 0 healthy, 1 on a critical finding).
    Status(StatusArgs),
    /// Write a support bundle (gzip tarball): logs and state from every node over SSH, the
    /// Kubernetes API, etcd and medic, scoped (--since, --node, --operation), redacted, with a
    /// MANIFEST.json of every item and its sha256; `medic report verify FILE` re-checks one.
    Report(ReportArgs),
    /// The state store: copy operations between the sled state directory and etcd.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum StateCommand {
    /// Copy operations (plan, records, history, logs, captures, secrets re-encrypted) from
    /// the current store (--state-dir, or --state) to another (--to), verifying counts and
    /// fingerprints; an operation that exists at the target is refused, never overwritten.
    Migrate {
        /// The target: etcd://HOST:PORT[/PREFIX], or a state directory (sled).
        #[arg(long, value_name = "etcd://HOST:PORT|DIR")]
        to: String,
        /// Copy only this operation (ID); default: all of them.
        #[arg(long)]
        operation: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum DrillCommand {
    /// Start a drill cluster in the background and write its inventory.
    Up {
        /// Control-plane nodes (each runs an etcd member).
        #[arg(long, default_value_t = 3, conflicts_with = "like")]
        control_planes: usize,
        /// Worker nodes.
        #[arg(long, default_value_t = 2, conflicts_with = "like")]
        workers: usize,
        /// Mirror the nodes and roles of an inventory (control-plane/master/etcd roles get etcd).
        #[arg(long, value_name = "CLUSTER_YAML")]
        like: Option<PathBuf>,
        /// Kubernetes version the nodes start at.
        #[arg(long, default_value = crate::drill::cluster::DEFAULT_VERSION)]
        version: String,
    },
    /// What runs, and the cluster's health.
    Status,
    /// Simulate a failure on a node.
    Break {
        #[arg(value_enum)]
        scenario: crate::drill::cluster::Scenario,
        node: String,
    },
    /// Give a node a fresh machine (reachable again, not joined, no etcd data), as an
    /// operator gets a replacement for a lost node.
    Provision { node: String },
    /// Stop everything the drill started.
    Down,
    /// Run a command as a drill node does (what the node's shims call).
    #[command(hide = true)]
    Node {
        tool: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the Kubernetes API emulator in the foreground (Ctrl-C stops it).
    Apiserver {
        /// Port on 127.0.0.1 (0 picks a free one; the address is printed).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// A YAML list of objects to start with (nodes, pods, DaemonSets, ReplicaSets, budgets).
        #[arg(long)]
        seed: Option<PathBuf>,
    },
    /// Save a snapshot of the drill's etcd to FILE on this machine (before `drill break
    /// quorum-lost`, to rehearse `etcd-restore-snapshot`).
    Snapshot { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ProceduresCommand {
    /// Show a procedure's parameters and phases.
    Show { name: String },
    /// Check procedure files without an operation or a cluster: every load error, and
    /// warnings (destructive-without-check, missing-description, irreversible, unused-param,
    /// secret-in-description). Exit 0 clean or warnings only, 1 warnings with --strict, 2 errors.
    Lint {
        /// Procedure files or directories of them; none lints the catalog (built-in
        /// procedures and --plans-dir).
        #[arg(value_name = "FILE|DIR")]
        paths: Vec<PathBuf>,
        /// Exit 1 when there are warnings.
        #[arg(long)]
        strict: bool,
    },
}

#[derive(Args, Debug)]
pub(crate) struct StartArgs {
    /// Procedure name (see `medic procedures`).
    pub(crate) name: String,
    /// A parameter value, key=value; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// A parameter value read from a file (one trailing newline dropped), key=PATH; keeps
    /// secrets such as join tokens out of the command line and shell history.
    #[arg(long = "set-file", value_name = "KEY=PATH")]
    pub(crate) set_file: Vec<String>,
    /// Create the operation but run nothing; run it later with `medic plan resume`.
    #[arg(long)]
    pub(crate) manual: bool,
    /// Print what would run, with every action rendered; create nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Why this operation is being run (recorded in history).
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Start even though another active operation acts on the same nodes or the etcd
    /// membership (recorded in the new operation's history).
    #[arg(long)]
    pub(crate) force: bool,
    /// Run in the background, in its own session: print the operation, the executor's pid and
    /// how to follow (`medic plan --tail`) and stop it (`medic plan stop`), and return at once.
    #[arg(long, conflicts_with_all = ["dry_run", "manual"])]
    pub(crate) detach: bool,
    /// Answer `yes` to every phase that asks for confirmation (`confirm: true`); without it
    /// and without a terminal the run stops at such a phase (exit 3).
    #[arg(long)]
    pub(crate) yes: bool,
}

#[derive(Args, Debug)]
pub(crate) struct PlanArgs {
    /// Operation ID (or a unique prefix); defaults to the single active operation.
    #[arg(long, global = true)]
    pub(crate) operation: Option<String>,
    /// Top-level phases only.
    #[arg(long)]
    pub(crate) short: bool,
    /// Follow changes until the run ends (exit 0 when done, 1 on failure).
    #[arg(long)]
    pub(crate) tail: bool,
    /// Why (recorded in history).
    #[arg(long, global = true)]
    pub(crate) reason: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Option<PlanCommand>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PlanCommand {
    /// Execute one phase (a group runs its unfinished children).
    Execute(PhaseArgs),
    /// Roll back one phase (a group rolls back its started children in reverse order).
    Rollback(PhaseArgs),
    /// Execute everything not yet completed; stops at a pause.
    Resume(RunArgs),
    /// Close the operation: completed if every phase completed, else failed.
    Complete,
    /// Export the plan for a change review.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Markdown)]
        format: ExportFormat,
    },
    /// Show phase output.
    Logs {
        #[arg(long)]
        phase: Option<String>,
    },
    /// Show every recorded state change.
    History,
    /// Ask the running executor to stop (from any terminal), like Ctrl-C in its terminal: no
    /// new phase starts, the running one is stopped and recorded failed; waits until it stopped.
    Stop {
        /// Exit the executor at once, like a second Ctrl-C: the running phase stays interrupted.
        #[arg(long)]
        now: bool,
    },
    /// Record a leaf phase's state by hand: a step the operator did by hand (completed), or
    /// one that must run again (unstarted). Needs --reason; refused while an executor runs.
    Set(SetArgs),
    /// Approve the operation's plan (its fingerprint) after reviewing it; records you
    /// (user@host), the time and --reason (required), and the cluster facts as they are now.
    Approve,
    /// List the operation's approvals, its approval policy and whether it may run.
    Approvals,
    /// Compare the facts recorded at start/approve (inventory, etcd members and health) with
    /// the cluster now; exit 1 when they differ.
    Drift,
}

#[derive(Args, Debug)]
pub(crate) struct SetArgs {
    /// Leaf phase ID such as /etcd/remove (a group's state follows from its leaves).
    #[arg(long)]
    pub(crate) phase: String,
    /// The state to record.
    #[arg(long, value_enum)]
    pub(crate) state: SetState,
}

/// The states `medic plan set` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum SetState {
    Completed,
    Failed,
    Unstarted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExportFormat {
    Markdown,
    Json,
    Dot,
    /// One self-contained page: the drawing, parameters, actions, history.
    Html,
    /// The drawing of the phase graph alone.
    Svg,
}

#[derive(Args, Debug)]
pub(crate) struct PhaseArgs {
    /// Phase ID such as /etcd/remove.
    #[arg(long)]
    pub(crate) phase: String,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// Override a safety refusal (recorded in history).
    #[arg(long)]
    pub(crate) force: bool,
    /// Show what would run; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Run in the background, in its own session: print the executor's pid and how to follow
    /// (`medic plan --tail`) and stop it (`medic plan stop`), and return at once.
    #[arg(long, conflicts_with = "dry_run")]
    pub(crate) detach: bool,
    /// Answer `yes` to every phase that asks for confirmation (`confirm: true`); without it
    /// and without a terminal the run stops at such a phase (exit 3).
    #[arg(long)]
    pub(crate) yes: bool,
}

/// The shells `medic completions` writes a script for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// What `medic __complete` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Candidates {
    /// Procedure names (built-in and `--plans-dir`).
    Procedures,
    /// Every stored operation's ID, oldest first.
    Operations,
    /// The phase IDs of the operation `medic plan` would show (root excluded).
    Phases,
}

/// Which document's schema to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Document {
    /// A procedure file (plans/NAME.yaml).
    Procedure,
    /// The inventory (cluster.yaml).
    Inventory,
}

#[derive(Subcommand, Debug)]
pub(crate) enum SshCommand {
    /// Close the kept master connections of the inventory's nodes (the next run reconnects
    /// and checks host keys afresh).
    Close {
        /// Only this node's.
        #[arg(long, value_name = "NODE", conflicts_with = "all")]
        node: Option<String>,
        /// Every kept master of this user, whatever inventory opened it (needs no inventory).
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// Run only these probes: a name (node/swap-off) or a component (node/, node/*); repeatable.
    #[arg(long, value_name = "PROBE")]
    pub(crate) only: Vec<String>,
    /// Waive a probe (kubeadm's --ignore-preflight-errors): shown as waived, never counted;
    /// a name or a component; repeatable.
    #[arg(long, value_name = "PROBE")]
    pub(crate) skip: Vec<String>,
    /// Run the per-node probes on this node only; repeatable.
    #[arg(long = "node", value_name = "NODE")]
    pub(crate) nodes: Vec<String>,
    /// Exit 1 on warnings too (for CI gates).
    #[arg(long)]
    pub(crate) strict: bool,
    /// Store the run as an operation of cluster-health (history shows it, and the waivers).
    #[arg(long, conflicts_with = "watch")]
    pub(crate) record: bool,
    /// Run again every INTERVAL and redraw in place, until Ctrl-C (a terminal only).
    #[arg(long)]
    pub(crate) watch: bool,
    /// Time between runs with --watch.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub(crate) interval: String,
    /// How long the probes of one component or node may take; slower ones show as unknown.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub(crate) timeout: String,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ReportArgs {
    #[command(subcommand)]
    pub(crate) command: Option<ReportCommand>,
    /// The bundle to write (default medic-report-TIME.tar.gz here). `-o` is the output
    /// format, as for every command.
    #[arg(long, short = 'f', value_name = "FILE.tar.gz")]
    pub(crate) file: Option<PathBuf>,
    /// Logs and events since: a duration back from now (2h, 30m) or a time
    /// (2026-12-03 10:00:00); with --operation it replaces the operation's window.
    #[arg(long, value_name = "DURATION|TIME")]
    pub(crate) since: Option<String>,
    /// Collect from this node only; repeatable (default: every inventory node, or those the
    /// --operation touched).
    #[arg(long = "node", value_name = "NODE")]
    pub(crate) nodes: Vec<String>,
    /// Collect only this group; repeatable.
    #[arg(long, value_enum, value_name = "GROUP")]
    pub(crate) only: Vec<crate::report::Group>,
    /// Scope to an operation: the nodes its plan touched, its start − 15 min … end + 5 min,
    /// its plan, history and logs.
    #[arg(long, value_name = "ID")]
    pub(crate) operation: Option<String>,
    /// List what would be collected from where, and collect nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Largest file in the bundle; a larger output keeps its tail and is marked truncated.
    #[arg(long, default_value = "25MiB", value_name = "SIZE")]
    pub(crate) max_file_size: String,
    /// Total budget: collecting stops (with a note in the manifest) when the files reach it.
    #[arg(long, default_value = "1GiB", value_name = "SIZE")]
    pub(crate) max_size: String,
    /// How long one command on a node (or a connection) may take.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub(crate) timeout: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ReportCommand {
    /// Re-check every file of a bundle against the sha256 in its MANIFEST.json (exit 1 on a
    /// mismatch, naming the file).
    Verify {
        /// The bundle (.tar.gz).
        file: PathBuf,
    },
}
