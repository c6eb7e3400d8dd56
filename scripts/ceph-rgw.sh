#!/usr/bin/env bash
# Start or stop a single-node Ceph RADOS Gateway (a real S3 server that checks SigV4 signatures)
# on loopback, for the S3 integration tests. Debian 12, run as root, no systemd, no network but
# the package registries. Recipe: shared/reference/test-infra.md section B.
#
#   eval "$(bash scripts/ceph-rgw.sh start)"   install the Debian packages if missing, start
#        ceph-mon + ceph-osd (memstore, 1 GiB, auth none, no mgr) + radosgw (beast) on free
#        loopback ports, pre-create the rgw pools, an S3 user and the bucket `elastic-test`, wait
#        until it answers (deadline ELASTIC_CEPH_TIMEOUT, default 120 s), then print ONLY
#        `export` lines on stdout: ELASTIC_TEST_S3_ENDPOINT (host:port, no scheme),
#        ELASTIC_TEST_S3_ACCESS_KEY, ELASTIC_TEST_S3_SECRET_KEY, ELASTIC_TEST_S3_BUCKET.
#        Already running (pid files alive and answering): prints the same exports again.
#        Failure: message on stderr, daemons killed, logs kept in the scratch dir, exit 1, and
#        stdout is the single word `false`, so that the `eval` above fails too.
#   bash scripts/ceph-rgw.sh stop               kill the daemons via their pid files, wait for
#        them (bounded), remove the scratch dir. Not running: nothing to do, exit 0.
#   bash scripts/ceph-rgw.sh status             exit 0 if running and answering.
#
# Everything lives in one scratch dir: ELASTIC_CEPH_DIR (default /tmp/elastic-ceph). Progress
# and tool output go to stderr. Concurrent calls for the same dir are serialised with flock.
set -euo pipefail

DIR=${ELASTIC_CEPH_DIR:-/tmp/elastic-ceph}
DIR=${DIR%/}
TIMEOUT=${ELASTIC_CEPH_TIMEOUT:-120}
BUCKET=elastic-test
PY=/usr/bin/python3            # Debian's python: python3-rados is installed for it only
CONF=$DIR/ceph.conf
ENVFILE=$DIR/s3.env
HELPER=$DIR/helper.py
# Pools radosgw would otherwise create lazily (each first bucket/put/multipart op then takes ~2 s).
POOLS=(.rgw.root default.rgw.control default.rgw.meta default.rgw.log
       default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec)
DAEMONS=(mon osd radosgw)      # pid file names

log() { echo "ceph-rgw.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

check_deadline() { [ "$SECONDS" -lt "$DEADLINE" ] || die "not ready within ${TIMEOUT}s (see $DIR/log)"; }
remaining() {                  # seconds left before the start deadline, at least 1 (for timeout)
    local r=$((DEADLINE - SECONDS))
    echo $((r < 1 ? 1 : r))
}

# pid from $DIR/run/$1.pid if that process is alive and is one of ours (its command line names
# our ceph.conf), else nothing.
our_pid() {
    local f=$DIR/run/$1.pid pid
    [ -f "$f" ] || return 0
    pid=$(tr -dc '0-9' <"$f")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 0
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CONF"; then echo "$pid"; fi
}

# Send SIGTERM to the named daemons and wait for them, SIGKILL after 10 s (bounded).
kill_wait() {
    local d pid pids=() alive i sig
    for d in "$@"; do
        pid=$(our_pid "$d")
        if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
    done
    for sig in KILL none; do
        for ((i = 0; i < 100; i++)); do          # 10 s
            alive=()
            for pid in "${pids[@]}"; do if kill -0 "$pid" 2>/dev/null; then alive+=("$pid"); fi; done
            [ "${#alive[@]}" -gt 0 ] || return 0
            pids=("${alive[@]}")
            sleep 0.1
        done
        if [ "$sig" = KILL ]; then
            log "pids ${pids[*]} ignored SIGTERM for 10 s; sending SIGKILL"
            kill -KILL "${pids[@]}" 2>/dev/null || true
        fi
    done
    die "pids ${pids[*]} did not exit"
}

# Stop our daemons one by one: radosgw hangs at shutdown if the OSD is gone, the OSD waits 5 s
# if the mon is gone. Leaves the scratch dir.
kill_daemons() {
    kill_wait radosgw
    kill_wait osd
    kill_wait mon
}

# Start a daemon (it forks into the background once initialised), retrying a few times.
# Stdio goes to a log; fd 9 (our flock) is closed so that the daemon does not hold the lock.
start_daemon() {
    local what=$1 try
    shift
    for try in 1 2 3 4 5; do
        if "$@" </dev/null >>"$DIR/log/stdio.log" 2>&1 9>&-; then return 0; fi
        log "$what failed to start (try $try); see $DIR/log"
        check_deadline
        sleep 0.5
    done
    die "$what failed to start 5 times"
}

is_running() {                 # all three daemons alive, exports known, RGW answering
    local d
    [ -f "$ENVFILE" ] && [ -f "$HELPER" ] || return 1
    for d in "${DAEMONS[@]}"; do [ -n "$(our_pid "$d")" ] || return 1; done
    # shellcheck disable=SC1090
    (. "$ENVFILE" && timeout 10 "$PY" "$HELPER" http-ok "http://$ELASTIC_TEST_S3_ENDPOINT/")
}

install_packages() {
    if command -v radosgw >/dev/null && command -v radosgw-admin >/dev/null \
        && command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null \
        && command -v monmaptool >/dev/null && [ -x "$PY" ] && "$PY" -c 'import rados' 2>/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "Ceph packages missing and not root: apt-get install radosgw ceph-mon ceph-osd"
    command -v apt-get >/dev/null || die "Ceph packages missing and no apt-get"
    log "installing radosgw ceph-mon ceph-osd (apt-get)"
    local apt=(apt-get -qq -o DPkg::Lock::Timeout=300)
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" update >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends \
        radosgw ceph-mon ceph-osd python3-rados >&2 || die "apt-get install failed"
}

write_helper() {
    cat >"$HELPER" <<'PYEOF'
"""Small helpers for ceph-rgw.sh (stdlib + python3-rados only)."""
import datetime, hashlib, hmac, http.client, json, secrets, socket, string, sys, time, urllib.request


def freeport(*ranges):
    for r in ranges:
        lo, hi = (int(x) for x in r.split("-"))
        for port in range(lo, hi + 1):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemons do
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                s.close()
            print(port)
            return
    sys.exit("no free port in " + " ".join(ranges))


def keys():
    alnum = string.ascii_uppercase + string.digits
    print("".join(secrets.choice(alnum) for _ in range(20)))
    print(secrets.token_urlsafe(30)[:40])


def _cluster(conf, deadline):
    import rados
    c = rados.Rados(conffile=conf, conf={"client_mount_timeout": "15"})
    c.connect(timeout=max(1, int(deadline - time.time())))
    return c


def _mon(c, deadline, **cmd):
    """Run an (idempotent) mon command; retry transient errors (seen: a command sent right
    after connect carries a zero fsid and fails with "wrong fsid") until the deadline."""
    while True:
        ret, out, err = c.mon_command(json.dumps(cmd), b"", timeout=max(1, int(deadline - time.time())))
        if ret == 0:
            return out
        if time.time() + 0.2 > deadline:
            sys.exit(f"mon command {cmd} failed: {ret} {err}")
        print(f"retrying mon command {cmd}: {ret} {err}", file=sys.stderr)
        time.sleep(0.2)


def osd_new(conf, uuid, timeout):
    deadline = time.time() + float(timeout)
    c = _cluster(conf, deadline)
    osd_id = json.loads(_mon(c, deadline, prefix="osd new", uuid=uuid, format="json"))["osdid"]
    # Done here, with retries, instead of by ceph-osd at init (see ceph.conf).
    _mon(c, deadline, prefix="osd crush create-or-move", id=osd_id, weight=1.0,
         args=["host=localhost", "root=default"])
    print(osd_id)


def pools(conf, osd_id, timeout, *names):
    """Create the rgw pools, then wait until the OSD is up and in."""
    deadline = time.time() + float(timeout)
    c = _cluster(conf, deadline)
    for p in names:
        _mon(c, deadline, prefix="osd pool create", pool=p, pg_num=8, pgp_num=8)
        _mon(c, deadline, prefix="osd pool application enable", pool=p, app="rgw")
    while time.time() < deadline:
        osds = json.loads(_mon(c, deadline, prefix="osd dump", format="json"))["osds"]
        if any(o["osd"] == int(osd_id) and o["up"] and o["in"] for o in osds):
            return
        time.sleep(0.2)
    sys.exit(f"osd.{osd_id} not up and in before the deadline")


def http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            sys.exit(0 if r.status == 200 else 1)
    except Exception:
        sys.exit(1)


def put_bucket(endpoint, ak, sk, bucket):
    """SigV4-signed PUT /bucket; ok if created or already ours."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amzdate, date = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    region, path, payload_hash = "us-east-1", "/" + bucket, hashlib.sha256(b"").hexdigest()
    headers = {"host": endpoint, "x-amz-content-sha256": payload_hash, "x-amz-date": amzdate}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["PUT", path, "", "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
                           signed, payload_hash])
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + sk).encode()
    for part in (date, region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={ak}/{scope}, "
                                f"SignedHeaders={signed}, Signature={sig}")
    host, port = endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("PUT", path, body=b"", headers=headers)
    r = conn.getresponse()
    body = r.read().decode(errors="replace")
    if r.status == 200 or (r.status == 409 and "BucketAlreadyOwnedByYou" in body):
        return
    sys.exit(f"PUT {path}: HTTP {r.status} {body[:300]}")


if __name__ == "__main__":
    fn = {"freeport": freeport, "keys": keys, "osd-new": osd_new, "pools": pools,
          "http-ok": http_ok, "put-bucket": put_bucket}[sys.argv[1]]
    fn(*sys.argv[2:])
PYEOF
}

write_conf() {   # $1 fsid, $2 mon port, $3 rgw port
    cat >"$CONF" <<EOF
[global]
fsid = $1
mon host = v1:127.0.0.1:$2
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = $DIR/keyring
run dir = $DIR/run
crash dir = $DIR/crash
log file = $DIR/log/\$cluster-\$name.log
mon cluster log file = $DIR/log/\$cluster.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
# Work on machines with little free disk (defaults: warn below 30 %, mon stops below 5 %).
mon data avail warn = 2
mon data avail crit = 1

mon warn on insecure global id reclaim allowed = false

[mon]
mon data = $DIR/mon/\$cluster-\$id
# Commit each map change after ~50 ms instead of ~1 s: creating the pools (14 map changes)
# takes ~1 s instead of ~14 s.
paxos propose interval = 0.05
paxos min wait = 0.01
pid file = $DIR/run/mon.pid

[osd]
osd data = $DIR/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = 1073741824
# At init ceph-osd sends mon commands to place itself in the CRUSH map; Ceph 16's MonClient
# sometimes sends them with a zero fsid ("wrong fsid") and the OSD then fails to start.
# helper.py osd-new places the OSD instead, retrying.
osd crush update on start = false
osd class update on start = false
pid file = $DIR/run/osd.pid

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$3
rgw data = $DIR/rgw
rgw thread pool size = 64
pid file = $DIR/run/radosgw.pid
EOF
}

start() {
    if is_running; then
        log "already running ($DIR)"
        cat "$ENVFILE"
        return 0
    fi
    if [ -e "$DIR" ]; then
        log "removing stale $DIR"
        kill_daemons
        rm -rf "$DIR"
    fi
    install_packages
    local t0=$SECONDS
    DEADLINE=$((SECONDS + TIMEOUT))
    STARTING=1
    mkdir -p "$DIR"/{run,log,crash,rgw,mon/ceph-a}
    write_helper

    local mon_port rgw_port fsid osd_uuid osd_id ak sk k
    mon_port=$("$PY" "$HELPER" freeport 6789-6799 6700-6788)
    rgw_port=$("$PY" "$HELPER" freeport 7480-7580 17480-17580)
    fsid=$(cat /proc/sys/kernel/random/uuid)
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    mapfile -t k < <("$PY" "$HELPER" keys)
    ak=${k[0]} sk=${k[1]}
    write_conf "$fsid" "$mon_port" "$rgw_port"
    log "starting in $DIR: mon 127.0.0.1:$mon_port, rgw 127.0.0.1:$rgw_port"

    local out=$DIR/log/stdio.log
    ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >>"$out" 2>&1
    monmaptool --create --addv a "v1:127.0.0.1:$mon_port" --fsid "$fsid" "$DIR/monmap" >>"$out" 2>&1
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring" >>"$out" 2>&1 \
        || die "ceph-mon --mkfs failed (see $DIR/log)"
    start_daemon ceph-mon ceph-mon -c "$CONF" -i a

    osd_id=$(timeout "$(remaining)" "$PY" "$HELPER" osd-new "$CONF" "$osd_uuid" "$(remaining)" 2>>"$out") \
        || die "ceph-mon not answering / osd new failed (see $DIR/log)"
    mkdir -p "$DIR/osd/ceph-$osd_id"
    timeout "$(remaining)" ceph-osd -c "$CONF" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >>"$out" 2>&1 \
        || die "ceph-osd --mkfs failed (see $DIR/log)"
    start_daemon ceph-osd ceph-osd -c "$CONF" -i "$osd_id"
    log "mon and osd.$osd_id started ($((SECONDS - t0)) s); creating pools"

    timeout "$(remaining)" "$PY" "$HELPER" pools "$CONF" "$osd_id" "$(remaining)" "${POOLS[@]}" 2>>"$out" \
        || die "pool creation or osd boot failed (see $DIR/log)"
    # Blocks until the PGs are active; also creates the default realm/zonegroup/zone.
    timeout "$(remaining)" radosgw-admin -c "$CONF" user create --uid=elastic --display-name=elastic \
        --access-key="$ak" --secret-key="$sk" >>"$out" 2>&1 || die "radosgw-admin user create failed"
    start_daemon radosgw radosgw -c "$CONF" -n client.rgw.a
    log "pools and user ready ($((SECONDS - t0)) s); waiting for radosgw"

    until "$PY" "$HELPER" http-ok "http://127.0.0.1:$rgw_port/"; do
        [ -n "$(our_pid radosgw)" ] || die "radosgw exited (see $DIR/log/ceph-client.rgw.a.log)"
        check_deadline
        sleep 0.2
    done
    timeout "$(remaining)" "$PY" "$HELPER" put-bucket "127.0.0.1:$rgw_port" "$ak" "$sk" "$BUCKET" \
        || die "could not create bucket $BUCKET"

    cat >"$ENVFILE" <<EOF
export ELASTIC_TEST_S3_ENDPOINT=127.0.0.1:$rgw_port
export ELASTIC_TEST_S3_ACCESS_KEY=$ak
export ELASTIC_TEST_S3_SECRET_KEY=$sk
export ELASTIC_TEST_S3_BUCKET=$BUCKET
EOF
    STARTING=
    log "ready in $((SECONDS - t0)) s: http://127.0.0.1:$rgw_port bucket $BUCKET"
    cat "$ENVFILE"
}

stop() {
    if [ ! -e "$DIR" ]; then log "not running ($DIR absent)"; return 0; fi
    local t0=$SECONDS
    kill_daemons
    rm -rf "$DIR"
    log "stopped in $((SECONDS - t0)) s"
}

on_exit() {
    local rc=$?
    if [ "$rc" != 0 ]; then
        if [ -n "${STARTING:-}" ]; then
            STARTING=
            log "start failed; killing daemons, logs kept in $DIR/log"
            tail -n 5 "$DIR"/log/*.log >&2 2>/dev/null || true
            (kill_daemons) || true
        fi
        echo false        # make `eval "$(ceph-rgw.sh start)"` fail as well
    fi
    exit "$rc"
}

main() {
    local cmd=${1:-}
    case $cmd in
        start | stop | status) ;;
        *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
    esac
    mkdir -p "$(dirname "$DIR")"
    exec 9>"$DIR.lock"
    flock -w "$((TIMEOUT + 60))" 9 || die "another ceph-rgw.sh holds $DIR.lock"
    case $cmd in
        start) trap on_exit EXIT; start ;;
        stop) stop ;;
        status) is_running ;;
    esac
}

STARTING=
DEADLINE=0
main "$@"
