//! `ss` on a drill node: the listening TCP sockets of that node only, so the port probes
//! (`node/port-6443`, …) see each node as its own machine although the drill's nodes share
//! this machine's network namespace.
//!
//! The answer is built from the real `ss -ltnH` of this machine:
//! 1. sockets bound to the node's own address (each node has its own loopback address, and its
//!    etcd member and sshd bind there), with the drill's ports shown as a kubeadm node's: the
//!    etcd client port as 2379, the peer port as 2380, sshd's as 22;
//! 2. the API emulator's socket (127.0.0.1, shared by the control plane) as port 6443 of every
//!    joined control-plane node that is not lost: it goes away on all of them together;
//! 3. port 10250 while the node's kubelet runs. The drill's kubelet is not a process (it is the
//!    state `systemctl is-active kubelet` answers from), so this line follows that state rather
//!    than a socket.

use super::host::real;
use super::Reply;
use crate::drill::state::Drill;

/// The ports a kubeadm node listens on, as the probes name them.
pub(crate) const API_PORT: u16 = 6443;
pub(crate) const ETCD_CLIENT_PORT: u16 = 2379;
pub(crate) const ETCD_PEER_PORT: u16 = 2380;
pub(crate) const KUBELET_PORT: u16 = 10250;

/// `ss -ltn[H]` as node `node` of the drill sees it; other uses are refused (exit 1).
pub(super) fn ss(drill: &Drill, node: &str, args: &[String]) -> Reply {
    let Some(header) = listening_tcp_args(args) else {
        return Reply::err(
            1,
            "ss (medic drill): a drill node answers listening TCP sockets only: ss -ltn [-H]\n",
        );
    };
    let out = match std::process::Command::new(real("ss"))
        .args(["-ltnH"])
        .output()
    {
        Ok(o) if o.status.success() => o,
        Ok(o) => return Reply::err(1, String::from_utf8_lossy(&o.stderr).into_owned()),
        Err(e) => return Reply::err(1, format!("ss: {e}\n")),
    };
    let Ok(n) = drill.node(node) else {
        return Reply::err(1, format!("medic drill: unknown node {node}\n"));
    };
    let mut ports = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(local) = line.split_whitespace().nth(3) else {
            continue;
        };
        let Some((host, port)) = local.rsplit_once(':') else {
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host == n.address {
            ports.push(if port == drill.etcd_client_port {
                ETCD_CLIENT_PORT
            } else if port == drill.etcd_peer_port {
                ETCD_PEER_PORT
            } else if port == drill.ssh_port {
                22
            } else {
                port
            });
        } else if host == "127.0.0.1"
            && port == drill.api_port
            && n.control_plane
            && n.joined
            && !n.lost
        {
            ports.push(API_PORT);
        }
    }
    if n.kubelet && !n.lost {
        ports.push(KUBELET_PORT);
    }
    ports.sort_unstable();
    ports.dedup();
    let mut text = String::new();
    if header {
        text.push_str("State  Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n");
    }
    for port in ports {
        text.push_str(&format!(
            "LISTEN 0      4096   {}:{port} 0.0.0.0:*\n",
            n.address
        ));
    }
    Reply::ok(text)
}

/// Whether `args` ask for listening TCP sockets with numeric ports (`-ltn`, `-ltnH`, long
/// forms); `Some(true)` when a header is wanted.
fn listening_tcp_args(args: &[String]) -> Option<bool> {
    let (mut l, mut t, mut n, mut header) = (false, false, false, true);
    for a in args {
        match a.as_str() {
            "--listening" => l = true,
            "--tcp" => t = true,
            "--numeric" => n = true,
            "--no-header" => header = false,
            s if s.starts_with('-') && !s.starts_with("--") => {
                for c in s[1..].chars() {
                    match c {
                        'l' => l = true,
                        't' => t = true,
                        'n' => n = true,
                        'H' => header = false,
                        _ => return None,
                    }
                }
            }
            _ => return None,
        }
    }
    (l && t && n).then_some(header)
}

#[cfg(test)]
mod tests {
    use super::listening_tcp_args;

    fn a(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_listening_tcp_numeric_is_answered() {
        assert_eq!(listening_tcp_args(&a(&["-ltnH"])), Some(false));
        assert_eq!(listening_tcp_args(&a(&["-tln"])), Some(true));
        assert_eq!(
            listening_tcp_args(&a(&["--listening", "--tcp", "--numeric", "--no-header"])),
            Some(false)
        );
        assert_eq!(listening_tcp_args(&a(&["-ltnp"])), None);
        assert_eq!(listening_tcp_args(&a(&["-tn"])), None);
        assert_eq!(listening_tcp_args(&a(&["-ltn", "sport", "=", ":22"])), None);
    }
}
