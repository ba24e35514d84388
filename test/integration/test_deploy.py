"""The deployment files: contrib/kubernetes (manifests, Dockerfile) and
contrib/systemd (the unit).

The manifests are checked for what makes them work together: names,
selectors, ports and mounted files that must agree with each other and with
the pgtenant.ini in the ConfigMap.  That ini is then run through
`pgtenant --check`, and pgtenant is started with it (pointed at the suite's
PostgreSQL) to show that the probe path answers and that the stop signal
drains.

The ini names files by their paths in the container (/etc/pgtenant/...,
/var/run/secrets/pgtenant/...), which the test must not create on this
machine.  So the test does what the kubelet does: it lays out each volume of
the Deployment (the ConfigMap's and Secret's items at their paths) under a
temporary directory, and replaces each mount path in the ini by its
directory.  That replacement of mount-path prefixes is the only change made
for --check; the RDS CA bundle, which kustomize makes from a file that is
not in the repository, is stood in for by a test CA.
"""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import psycopg
import pytest
import yaml

from conftest import APP_PASSWORD, PGTENANT_BIN, free_port, wait_port
from tlscerts import CertMaker

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
K8S = os.path.join(ROOT, "contrib", "kubernetes")
UNIT = os.path.join(ROOT, "contrib", "systemd", "pgtenant.service")


# ---------------------------------------------------------------- manifests

def documents():
    docs = []
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    docs.append((os.path.basename(path), doc))
    return docs


def one(kind, name=None):
    found = [d for _, d in documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, "expected one %s %s, found %d" % (kind, name or "", len(found))
    return found[0]


def pod_spec():
    return one("Deployment")["spec"]["template"]["spec"]


def container():
    cs = pod_spec()["containers"]
    assert len(cs) == 1
    return cs[0]


def ini_text():
    return one("ConfigMap", "pgtenant-config")["data"]["pgtenant.ini"]


def parse_ini(text):
    """{section: {key: value}} as pgtenant reads it (inline comments after
    whitespace and ';')."""
    out, section = {}, None
    for line in text.splitlines():
        s = line.strip()
        if not s or s[0] in ";#":
            continue
        if s.startswith("["):
            section = s.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = s.partition("=")
        value = re.split(r"\s;", value, maxsplit=1)[0].strip()
        out[section][key.strip()] = value
    return out


def conninfo(s):
    return dict(kv.split("=", 1) for kv in s.split())


def metrics_port(ini):
    listen = ini["pgtenant"]["metrics_listen"]
    assert listen, "metrics_listen is empty: the probes would have nothing to ask"
    return int(listen.rsplit(":", 1)[1])


def container_port(c, port):
    """A probe's or Service's port (a number or a port name) as a number."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in c["ports"] if p.get("name") == port]
    assert named, "no container port named %s" % port
    return named[0]


def file_paths(ini):
    """Every file the ini names: (where, path)."""
    paths = []
    for key in ("auth_file", "server_tls_ca_file", "server_tls_cert_file", "server_tls_key_file",
                "client_tls_cert_file", "client_tls_key_file", "client_tls_ca_file", "jwt_key_file",
                "jwt_secret_file", "server_password_file"):
        if ini["pgtenant"].get(key):
            paths.append((key, ini["pgtenant"][key]))
    for name, cs in ini.get("databases", {}).items():
        pf = conninfo(cs).get("password_file")
        if pf:
            paths.append(("[databases] %s password_file" % name, pf))
    return paths


def generated_configmaps():
    """Names of the ConfigMaps kustomization.yaml makes, with their keys."""
    k = one("Kustomization")
    return {g["name"]: [os.path.basename(f.split("=", 1)[-1]) for f in g.get("files", [])]
            for g in k.get("configMapGenerator", [])}


def volume_items(volume):
    """[(source kind, source name, key, relative path)] of a volume."""
    def items(kind, src):
        name = src.get("name") or src.get("secretName")
        keys = src.get("items")
        if keys is None:
            if kind == "Secret":
                doc = one("Secret", name)
                keys = [{"key": k, "path": k} for k in list(doc.get("stringData", {})) + list(doc.get("data", {}))]
            elif name in generated_configmaps():
                keys = [{"key": k, "path": k} for k in generated_configmaps()[name]]
            else:
                keys = [{"key": k, "path": k} for k in one("ConfigMap", name)["data"]]
        return [(kind, name, i["key"], i["path"]) for i in keys]

    if "configMap" in volume:
        return items("ConfigMap", volume["configMap"])
    if "secret" in volume:
        return items("Secret", volume["secret"])
    if "projected" in volume:
        out = []
        for src in volume["projected"]["sources"]:
            if "configMap" in src:
                out += items("ConfigMap", src["configMap"])
            elif "secret" in src:
                out += items("Secret", src["secret"])
        return out
    raise AssertionError("volume %s: unexpected type" % volume["name"])


def pod_files():
    """{absolute path in the container: (kind, name, key)} for every mounted item."""
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    files = {}
    for m in container()["volumeMounts"]:
        assert "subPath" not in m, "a subPath mount is not updated when its ConfigMap or Secret changes"
        for kind, name, key, rel in volume_items(volumes[m["name"]]):
            files[os.path.join(m["mountPath"], rel)] = (kind, name, key)
    return files


def test_every_document_is_a_named_object():
    docs = documents()
    for fname, d in docs:
        assert d.get("apiVersion") and d.get("kind"), fname
        assert d.get("metadata", {}).get("name"), "%s: %s without metadata.name" % (fname, d["kind"])
    kinds = {d["kind"] for _, d in docs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret"} <= kinds, kinds
    # kubectl apply -k applies them all
    listed = set(one("Kustomization")["resources"])
    files = {f for f, d in docs if d["kind"] != "Kustomization"}
    assert listed == files, (listed, files)


def test_labels_and_selectors_agree():
    dep = one("Deployment")
    sel = dep["spec"]["selector"]["matchLabels"]
    assert sel and "app.kubernetes.io/name" in sel
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert sel.items() <= pod_labels.items()
    assert one("Service")["spec"]["selector"] == sel
    assert one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == sel
    for c in pod_spec().get("topologySpreadConstraints", []):
        assert c["labelSelector"]["matchLabels"] == sel
    for fname, d in documents():
        if d["kind"] != "Kustomization":
            assert sel.items() <= d["metadata"].get("labels", {}).items(), "%s: %s" % (fname, d["kind"])


def test_deployment_probes_ports_and_draining():
    ini = parse_ini(ini_text())
    dep = one("Deployment")
    replicas = dep["spec"]["replicas"]
    assert replicas >= 2
    pdb = one("PodDisruptionBudget")["spec"]
    if "maxUnavailable" in pdb:
        assert 1 <= pdb["maxUnavailable"] < replicas
    else:
        assert pdb["minAvailable"] < replicas
    c = container()
    for probe in ("readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        # pgtenant serves nothing else over HTTP
        assert get["path"] == "/metrics", probe
        assert container_port(c, get["port"]) == metrics_port(ini), probe
    # the command line is pgtenant's, the config one the pod has
    assert c["command"] == ["/usr/bin/pgtenant"] and len(c["args"]) == 1
    assert c["args"][0] in pod_files()
    # the Service reaches the pooler and the metrics ports
    svc_ports = {container_port(c, p["targetPort"]) for p in one("Service")["spec"]["ports"]}
    assert {int(ini["pgtenant"]["listen_port"]), metrics_port(ini)} <= svc_ports
    assert ini["pgtenant"]["listen_addr"] in ("*", "0.0.0.0", "::"), "the pod must listen beyond localhost"
    # draining: the preStop pause and a transaction left idle fit in the grace period
    grace = pod_spec()["terminationGracePeriodSeconds"]
    pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    idle = int(ini["pgtenant"]["idle_transaction_timeout"])
    assert 0 < idle and pause + idle < grace, (pause, idle, grace)


def test_container_is_hardened():
    spec = pod_spec()
    c = container()
    sc = c["securityContext"]
    psc = spec["securityContext"]
    assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True
    assert (sc.get("runAsUser") or psc.get("runAsUser", 0)) != 0
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    assert sc.get("privileged", False) is False
    assert (sc.get("seccompProfile") or psc.get("seccompProfile"))["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # a read-only root: the ini must not write files outside a volume
    ini = parse_ini(ini_text())["pgtenant"]
    for key in ("unix_socket_dir", "pidfile", "logfile", "audit_log"):
        assert ini.get(key, "x") == "", "%s would write to the read-only root filesystem" % key


def test_every_file_the_ini_names_is_mounted():
    ini = parse_ini(ini_text())
    files = pod_files()
    paths = file_paths(ini)
    assert paths
    for where, path in paths:
        assert path in files, "%s = %s is not in a volume: %s" % (where, path, sorted(files))
    # the backend password comes from the Secret, as JSON {"username","password"}
    pf = conninfo(ini["databases"]["appdb"])["password_file"]
    kind, name, key = files[pf]
    assert kind == "Secret"
    secret = one("Secret", name)
    assert secret["type"] == "Opaque"
    cred = json.loads(secret["stringData"][key])
    assert set(cred) == {"username", "password"}
    # the server certificate is verified against the RDS bundle
    assert conninfo(ini["databases"]["appdb"]).get("sslmode", ini["pgtenant"]["server_tls_sslmode"]) == "verify-full"
    kind, name, key = files[ini["pgtenant"]["server_tls_ca_file"]]
    assert key in generated_configmaps().get(name, []), "the CA bundle ConfigMap is made by kustomization.yaml"


def pod_root(tmp_path):
    """Lay out the pod's volumes under tmp_path; return (ini path, {mount path: directory})."""
    ca = CertMaker(tmp_path).ca("rds-stand-in", "Test stand-in for the RDS CA")
    mounts = {m["mountPath"]: str(tmp_path / ("vol-" + m["name"])) for m in container()["volumeMounts"]}
    for path, (kind, name, key) in pod_files().items():
        mount = max((m for m in mounts if path.startswith(m + "/")), key=len)
        dest = os.path.join(mounts[mount], os.path.relpath(path, mount))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if kind == "Secret":
            doc = one("Secret", name)
            data = doc.get("stringData", {}).get(key)
            assert data is not None, "%s: %s has no %s" % (kind, name, key)
        elif name in generated_configmaps():
            with open(ca.cert) as f:
                data = f.read()
        else:
            data = one("ConfigMap", name)["data"][key]
        with open(dest, "w", encoding="utf-8") as f:
            f.write(data)
    ini_path = container()["args"][0]
    mount = max((m for m in mounts if ini_path.startswith(m + "/")), key=len)
    local_ini = os.path.join(mounts[mount], os.path.relpath(ini_path, mount))
    with open(local_ini, encoding="utf-8") as f:
        text = f.read()
    for m in sorted(mounts, key=len, reverse=True):
        text = text.replace(m + "/", mounts[m] + "/")
    with open(local_ini, "w", encoding="utf-8") as f:
        f.write(text)
    return local_ini, mounts


def check(ini):
    return subprocess.run([PGTENANT_BIN, "--check", ini], capture_output=True, text=True, timeout=30)


def test_configmap_ini_passes_check(tmp_path):
    ini, mounts = pod_root(tmp_path)
    r = check(ini)
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout
    # --check reads the files: without the CA bundle the same ini fails
    ca = parse_ini(open(ini).read())["pgtenant"]["server_tls_ca_file"]
    os.rename(ca, ca + ".away")
    r = check(ini)
    assert r.returncode == 1 and "global-bundle.pem" in r.stderr, r.stderr
    os.rename(ca + ".away", ca)
    # and a bad value is reported with its line
    text = open(ini).read()
    broken = tmp_path / "broken.ini"
    broken.write_text(text.replace("pool_mode = transaction", "pool_mode = sometimes"))
    r = check(str(broken))
    line = text.splitlines().index("pool_mode = transaction") + 1
    assert r.returncode == 1 and "%s:%d:" % (broken, line) in r.stderr, r.stderr


def http_get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_probe_answers_and_stop_signal_drains(pg, tmp_path):
    """The ConfigMap's ini, with only the addresses changed (the local
    PostgreSQL for Aurora, free local ports): the probe path answers 200,
    and SIGINT (the image's STOPSIGNAL) closes the port but lets a running
    transaction finish."""
    ini, mounts = pod_root(tmp_path)
    text = open(ini).read()
    conf = parse_ini(text)
    port, mport = free_port(), free_port()
    appdb = conninfo(conf["databases"]["appdb"])
    with open(appdb["password_file"], "w") as f:
        json.dump({"username": "app", "password": APP_PASSWORD}, f)
    local = "host=127.0.0.1 port=%d dbname=appdb user=app sslmode=disable password_file=%s password=%s" % (
        pg.port, appdb["password_file"], APP_PASSWORD)
    text = re.sub(r"(?m)^appdb = .*$", "appdb = " + local, text)
    text = re.sub(r"(?m)^listen_addr = .*$", "listen_addr = 127.0.0.1", text)
    text = re.sub(r"(?m)^listen_port = .*$", "listen_port = %d" % port, text)
    text = re.sub(r"(?m)^metrics_listen = .*$", "metrics_listen = 127.0.0.1:%d" % mport, text)
    with open(ini, "w") as f:
        f.write(text)
    probe = container()["readinessProbe"]["httpGet"]["path"]
    # the userlist from the Secret
    users = dict(re.findall(r'"([^"]+)" "([^"]*)"', one("Secret", "pgtenant-secret")["stringData"]["userlist.txt"]))
    log = open(tmp_path / "pgtenant.log", "w")
    proc = subprocess.Popen([PGTENANT_BIN, ini], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=proc)
        wait_port(mport, proc=proc)
        status, body = http_get(mport, probe)
        assert status == 200 and "pgtenant_" in body
        assert http_get(mport, "/healthz")[0] == 404
        dsn = "host=127.0.0.1 port=%d dbname=appdb user=app password=%s options='-c tenant=acme'" % (
            port, users["app"])
        with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
            assert conn.execute("select current_setting('app.tenant_id')").fetchone()[0] == "acme"
            conn.execute("begin")
            conn.execute("select 1")
            proc.send_signal(signal.SIGINT)
            # the listener closes at once: load balancers move on
            deadline = time.time() + 5
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    time.sleep(0.05)
                except OSError:
                    break
            else:
                raise AssertionError("the port stayed open after SIGINT")
            time.sleep(0.5)
            assert proc.poll() is None, "exited with a transaction running"
            conn.execute("commit")
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert "got SIGINT" in open(tmp_path / "pgtenant.log").read()


def test_dockerfile_matches_the_deployment():
    with open(os.path.join(K8S, "Dockerfile")) as f:
        text = f.read()
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"(?m)^STOPSIGNAL SIGINT$", final), "the kubelet would send SIGTERM: no draining"
    user = re.search(r"(?m)^USER (\d+)", final).group(1)
    assert int(user) == pod_spec()["securityContext"]["runAsUser"]
    assert re.search(r'(?m)^ENTRYPOINT \["%s"\]' % container()["command"][0], final)
    # the runtime stage installs the packages of the libraries pgtenant links
    if not shutil.which("dpkg-query") or not shutil.which("ldd"):
        pytest.skip("no dpkg/ldd to map libraries to packages")
    libs = re.findall(r"=> (/\S+)", subprocess.run(["ldd", PGTENANT_BIN], capture_output=True, text=True).stdout)
    for lib in libs:
        if re.search(r"/lib(c|m|asan|ubsan|gcc_s|stdc\+\+|crypto|pthread|dl)[.-]", lib):
            continue
        for cand in (lib, os.path.realpath(lib), "/usr" + lib if lib.startswith("/lib") else lib):
            r = subprocess.run(["dpkg-query", "-S", cand], capture_output=True, text=True)
            if r.returncode == 0:
                pkg = r.stdout.split(":")[0]
                assert re.search(r"\b%s\b" % re.escape(pkg), final), "%s (%s) missing in the image" % (pkg, lib)
                break


# ---------------------------------------------------------------- systemd

def unit_directives():
    out = {}
    with open(UNIT) as f:
        for line in f:
            s = line.strip()
            if not s or s[0] in "#;[":
                continue
            k, _, v = s.partition("=")
            out.setdefault(k, []).append(v)
    return out


def test_unit_is_hardened():
    d = unit_directives()
    start = d["ExecStart"][0].split()
    assert start == ["/usr/bin/pgtenant", "/etc/pgtenant/pgtenant.ini"]
    assert "/bin/kill -HUP $MAINPID" in d["ExecReload"]
    # a reload that would be refused fails `systemctl reload`
    assert "/usr/bin/pgtenant --check /etc/pgtenant/pgtenant.ini" in d["ExecReload"]
    assert d["Type"] == ["simple"]
    assert d["KillSignal"] == ["SIGINT"]  # pgtenant's graceful shutdown; SIGTERM exits at once
    assert d["Restart"] == ["on-failure"]
    assert int(d["LimitNOFILE"][0]) >= 65536
    assert d["CapabilityBoundingSet"] == [""]
    assert d["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert d["SystemCallFilter"][0] == "@system-service"
    for key in ("DynamicUser", "ProtectHome", "PrivateTmp", "PrivateDevices", "NoNewPrivileges",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
                "RestrictNamespaces", "LockPersonality", "MemoryDenyWriteExecute"):
        assert d.get(key) == ["yes"], key
    assert d["ProtectSystem"] == ["strict"]
    assert d["SystemCallArchitectures"] == ["native"]
    for key in ("RuntimeDirectory", "ConfigurationDirectory", "LogsDirectory"):
        assert d[key] == ["pgtenant"], key
    assert d["ExecStart"][0].split()[1].startswith("/etc/pgtenant/")


def verify(path):
    return subprocess.run(["systemd-analyze", "verify", "--man=no", path], capture_output=True, text=True,
                          timeout=60)


def test_unit_passes_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    probe = tmp_path / "pgt-probe.service"
    probe.write_text("[Service]\nExecStart=/bin/true\n")
    r = verify(str(probe))
    if r.returncode != 0:
        pytest.skip("systemd-analyze verify does not work here: %s" % (r.stderr.strip() or r.stdout.strip()))
    # verify needs the binaries to exist: a copy of the one under test, at a path of our own
    binary = tmp_path / "bin" / "pgtenant"
    binary.parent.mkdir()
    shutil.copy(PGTENANT_BIN, binary)
    with open(UNIT) as f:
        text = f.read()
    unit = tmp_path / "pgtenant.service"
    unit.write_text(text.replace("/usr/bin/pgtenant", str(binary)))
    r = verify(str(unit))
    complaints = [l for l in (r.stdout + r.stderr).splitlines() if "pgtenant.service" in l]
    assert r.returncode == 0 and not complaints, r.stdout + r.stderr
    # a mistake is reported (so the check above can fail)
    unit.write_text(text.replace("/usr/bin/pgtenant", str(binary)).replace("KillSignal=SIGINT", "KillSignal=SIGNOPE"))
    r = verify(str(unit))
    assert "SIGNOPE" in r.stdout + r.stderr
