# Shared by the bench scripts (sourced; expects ROOT, and PY/CACHE where ansible is used).

# Builds the release binary and sets MEDIC to it.
build_medic() {
    (cd "$ROOT" && cargo build --release)
    MEDIC="${CARGO_TARGET_DIR:-$ROOT/target}/release/medic"
    [[ -x "$MEDIC" ]] || { echo "no binary at $MEDIC" >&2; exit 1; }
}

# ansible-core from PyPI in a venv cached under $CACHE; sets VENV.
ensure_ansible() {
    VENV="$CACHE/venv"
    if [[ ! -x "$VENV/bin/ansible-playbook" || ! -x "$VENV/bin/ansible" ]]; then
        mkdir -p "$CACHE"
        rm -rf "$VENV"
        "$PY" -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check ansible-core
    fi
}

# Starts sshd processes serving $N loopback addresses 127.0.0.2 onwards (16 per process) on
# $PORT with $TMP/host_key and $TMP/authorized_keys, appends their pids to SSHD_PIDS and waits
# until every address accepts connections. sftp is served (ansible's fetch needs it).
start_loopback_sshds() {
    local g i conf
    for ((g = 0; g * 16 < N; g++)); do
        conf="$TMP/sshd_config.$g"
        printf '%s\n' "Port $PORT" "HostKey $TMP/host_key" "PidFile $TMP/sshd.$g.pid" \
            "AuthorizedKeysFile $TMP/authorized_keys" "StrictModes no" "UsePAM no" \
            "PasswordAuthentication no" "KbdInteractiveAuthentication no" "PubkeyAuthentication yes" \
            "PermitRootLogin yes" "MaxStartups 200:30:400" "MaxSessions 200" "LogLevel ERROR" \
            "Subsystem sftp internal-sftp" >"$conf"
        for ((i = g * 16; i < N && i < (g + 1) * 16; i++)); do echo "ListenAddress 127.0.0.$((i + 2))" >>"$conf"; done
        /usr/sbin/sshd -D -e -f "$conf" </dev/null >/dev/null 2>>"$TMP/sshd.log" &
        SSHD_PIDS+=($!)
    done
    for ((i = 0; i < N; i++)); do
        until "$PY" -c "import socket; socket.create_connection(('127.0.0.$((i + 2))', $PORT), 1)" 2>/dev/null; do sleep 0.02; done
    done
}

# $N bench nodes on this machine: generated host and user keys, a free $PORT, $TMP/known_hosts,
# medic's inventory $TMP/cluster.yaml (workers n0…, connect_timeout $1, persist: 0 — every run
# opens its connections afresh, as the floor and ansible do), ansible's $TMP/hosts.ini, and the
# sshd processes serving them (see start_loopback_sshds). Sets PORT, USER_NAME.
setup_loopback_nodes() {
    local connect_timeout=$1 i a host_pub
    [[ -d /run/sshd ]] || mkdir -p /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$TMP/host_key" >/dev/null
    ssh-keygen -q -t ed25519 -N '' -f "$TMP/user_key" >/dev/null
    cp "$TMP/user_key.pub" "$TMP/authorized_keys"
    PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    USER_NAME=$(id -un)
    host_pub=$(cut -d' ' -f1,2 "$TMP/host_key.pub")
    : >"$TMP/known_hosts"
    {
        echo "name: bench"
        echo "ssh: {user: $USER_NAME, port: $PORT, identity_file: $TMP/user_key, known_hosts: $TMP/known_hosts, connect_timeout: $connect_timeout, persist: 0}"
        echo "nodes:"
    } >"$TMP/cluster.yaml"
    echo "[all]" >"$TMP/hosts.ini"
    for ((i = 0; i < N; i++)); do
        a=127.0.0.$((i + 2))
        echo "[$a]:$PORT $host_pub" >>"$TMP/known_hosts"
        echo "  - {name: n$i, address: $a, roles: [worker]}" >>"$TMP/cluster.yaml"
        echo "$a" >>"$TMP/hosts.ini"
    done
    start_loopback_sshds
}
