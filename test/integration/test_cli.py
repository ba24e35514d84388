"""The command line: --check, -V, -h, -d with pidfile, unknown options."""
import os
import signal
import subprocess
import time

from conftest import PGTENANT_BIN, free_port, wait_port


def run(*args, **kw):
    return subprocess.run([PGTENANT_BIN] + list(args), capture_output=True, text=True, timeout=20, **kw)


def test_version_and_help():
    r = run("-V")
    assert r.returncode == 0 and r.stdout.startswith("pgtenant ")
    r = run("-h")
    assert r.returncode == 0 and "--check" in r.stdout and "usage:" in r.stdout
    r = run("--no-such-flag", "x.ini")
    assert r.returncode == 1 and "usage:" in r.stderr
    r = run("-R", "x.ini")
    assert r.returncode == 1 and "not supported" in r.stderr


def test_check_reports_every_error_with_its_line(tmp_path):
    ini = tmp_path / "p.ini"
    ini.write_text("[databases]\n"
                   "a = host=x port=zero\n"
                   "[pgtenant]\n"
                   "listen_port = 70000\n"
                   "auth_type = trust\n"
                   "bogus_key = 1\n"
                   "query_wait_timeout = forever\n")
    r = run("--check", str(ini))
    assert r.returncode == 1
    for line, what in [(2, "invalid port"), (4, "listen_port"), (6, "unknown key \"bogus_key\""),
                       (7, "query_wait_timeout")]:
        assert "%s:%d: " % (ini, line) in r.stderr and what in r.stderr, r.stderr
    assert "4 error(s)" in r.stderr


def test_check_ok(tmp_path):
    ini = tmp_path / "p.ini"
    ini.write_text("[databases]\nappdb = host=127.0.0.1\n[pgtenant]\nauth_type = trust\n")
    r = run("--check", str(ini))
    assert r.returncode == 0 and "configuration OK" in r.stdout


def test_example_config_is_valid():
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    r = run("--check", os.path.join(root, "etc", "pgtenant.ini"))
    assert r.returncode == 0, r.stderr


def test_daemon_with_pidfile(tmp_path):
    port = free_port()
    pidfile = tmp_path / "pgtenant.pid"
    log = tmp_path / "pgtenant.log"
    ini = tmp_path / "p.ini"
    ini.write_text("[databases]\nappdb = host=127.0.0.1\n[pgtenant]\nauth_type = trust\n"
                   "listen_port = %d\nunix_socket_dir = %s\npidfile = %s\nlogfile = %s\n"
                   % (port, tmp_path, pidfile, log))
    r = run("-d", str(ini))
    assert r.returncode == 0, r.stderr
    wait_port(port)
    pid = int(pidfile.read_text())
    assert os.path.exists("/proc/%d" % pid)
    # the TCP listener opens first, the unix socket right after it
    sock = tmp_path / (".s.PGSQL.%d" % port)
    for _ in range(100):
        if sock.exists():
            break
        time.sleep(0.05)
    assert sock.exists()
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not os.path.exists("/proc/%d" % pid):
            break
        time.sleep(0.05)
    assert not os.path.exists("/proc/%d" % pid)
    assert not pidfile.exists()
    assert "started" in log.read_text()


def test_sigterm_as_soon_as_the_pidfile_exists_cleans_up(tmp_path):
    """A supervisor may signal the pid it reads from the pidfile at once; the
    default action of SIGTERM would leave the pidfile and the unix socket."""
    for i in range(10):
        d = tmp_path / ("r%d" % i)
        d.mkdir()
        port = free_port()
        pidfile = d / "pgtenant.pid"
        ini = d / "p.ini"
        ini.write_text("[databases]\nappdb = host=127.0.0.1\n[pgtenant]\nauth_type = trust\n"
                       "listen_port = %d\nunix_socket_dir = %s\npidfile = %s\nlogfile = %s\n"
                       % (port, d, pidfile, d / "pgtenant.log"))
        p = subprocess.Popen([PGTENANT_BIN, str(ini)], stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 10
        while not pidfile.exists() and time.time() < deadline:
            pass  # spin: the window between pidfile and loop is short
        assert pidfile.exists()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=10)
        assert p.returncode == 0, (p.returncode, err)
        assert not pidfile.exists()
        assert not (d / (".s.PGSQL.%d" % port)).exists()
        assert "got SIGTERM" in (d / "pgtenant.log").read_text()


def test_daemon_needs_logfile_and_pidfile(tmp_path):
    ini = tmp_path / "p.ini"
    ini.write_text("[databases]\nappdb = host=127.0.0.1\n[pgtenant]\nauth_type = trust\n")
    r = run("-d", str(ini))
    assert r.returncode == 1 and "pidfile" in r.stderr
