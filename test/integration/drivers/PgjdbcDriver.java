// pgjdbc through pgtenant, for test_drivers.py; run as a single-file source
// program (Java 11+): java -cp postgresql.jar PgjdbcDriver.java PORT PASSWORD
// THRESHOLD TENANTS THREADS ITERATIONS ITEMS SECONDS, where THRESHOLD is
// "default" (the driver's prepareThreshold, 5) or a number, and TENANTS a
// comma-separated list.  Each thread has its own connection (user app.TENANT)
// and runs the same PreparedStatement, in autocommit and, every tenth
// iteration, inside a transaction of two statements; every row must come from
// the thread's own tenant.  Prints a JSON summary on stdout.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public class PgjdbcDriver {
    static final String ONE = "select owner, id, current_setting('app.tenant_id') as tid from drv_items where id = ?";
    static final String RANGE = "select owner, id, current_setting('app.tenant_id') as tid from drv_items "
            + "where id between ? and ? + 2 order by id";

    static int ok, errors, wrong;
    static final List<String> errorSamples = new ArrayList<>();
    static final List<String> wrongSamples = new ArrayList<>();

    static synchronized void error(String where, Exception e) {
        errors++;
        if (errorSamples.size() < 10) {
            String state = e instanceof SQLException ? ((SQLException) e).getSQLState() : "";
            errorSamples.add(where + ": " + state + " " + e.getMessage());
        }
    }

    static synchronized void tally(String where, String bad) {
        if (bad == null) {
            ok++;
            return;
        }
        wrong++;
        if (wrongSamples.size() < 10)
            wrongSamples.add(where + ": " + bad);
    }

    // null if the statement returns `count` rows of ids first.. from `tenant`
    static String verify(PreparedStatement ps, String tenant, int first, int count) throws SQLException {
        StringBuilder got = new StringBuilder();
        int n = 0;
        boolean good = true;
        try (ResultSet rs = ps.executeQuery()) {
            while (rs.next()) {
                String owner = rs.getString(1), tid = rs.getString(3);
                int id = rs.getInt(2);
                got.append(" (").append(owner).append(',').append(id).append(',').append(tid).append(')');
                good &= tenant.equals(owner) && tenant.equals(tid) && id == first + n;
                n++;
            }
        }
        return good && n == count ? null
                : "wanted " + count + " rows from id " + first + " of " + tenant + ", got" + got;
    }

    static String json(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\')
                b.append('\\').append(c);
            else if (c < 0x20)
                b.append(String.format("\\u%04x", (int) c));
            else
                b.append(c);
        }
        return b.append('"').toString();
    }

    static String json(List<String> l) {
        List<String> q = new ArrayList<>();
        for (String s : l)
            q.add(json(s));
        return "[" + String.join(", ", q) + "]";
    }

    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(args[0]);
        String password = args[1], threshold = args[2];
        String[] tenants = args[3].split(",");
        int threads = Integer.parseInt(args[4]), iterations = Integer.parseInt(args[5]);
        int items = Integer.parseInt(args[6]);
        long deadline = System.currentTimeMillis() + (long) (Double.parseDouble(args[7]) * 1000);
        Class.forName("org.postgresql.Driver");
        List<Thread> all = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            final int n = t;
            final String tenant = tenants[t % tenants.length];
            Thread th = new Thread(() -> {
                Properties p = new Properties();
                p.setProperty("user", "app." + tenant);
                p.setProperty("password", password);
                p.setProperty("sslmode", "disable");
                p.setProperty("connectTimeout", "10");
                if (!threshold.equals("default"))
                    p.setProperty("prepareThreshold", threshold);
                int failures = 0;
                try (Connection conn = DriverManager.getConnection("jdbc:postgresql://127.0.0.1:" + port + "/appdb", p);
                     PreparedStatement one = conn.prepareStatement(ONE);
                     PreparedStatement range = conn.prepareStatement(RANGE)) {
                    for (int i = 0; i < iterations; i++) {
                        String where = tenant + "/" + n + "/" + i;
                        if (System.currentTimeMillis() > deadline) {
                            error(where, new Exception("deadline passed"));
                            break;
                        }
                        int id = (n * 7 + i) % items + 1;
                        try {
                            one.setInt(1, id);
                            if (i % 10 == 9) {
                                int first = Math.min(id, items - 2);
                                conn.setAutoCommit(false);
                                String bad = verify(one, tenant, id, 1);
                                range.setInt(1, first);
                                range.setInt(2, first);
                                String bad2 = verify(range, tenant, first, 3);
                                conn.commit();
                                conn.setAutoCommit(true);
                                tally(where, bad != null ? bad : bad2);
                            } else {
                                tally(where, verify(one, tenant, id, 1));
                            }
                        } catch (SQLException e) {
                            error(where, e);
                            try {
                                if (!conn.getAutoCommit()) {
                                    conn.rollback();
                                    conn.setAutoCommit(true);
                                }
                            } catch (SQLException ignored) {
                                // the next iteration reports a dead connection
                            }
                            if (++failures >= 20)
                                break;
                        }
                    }
                } catch (SQLException e) {
                    error(tenant + "/" + n + " connect", e);
                }
            });
            th.setDaemon(true);
            th.start();
            all.add(th);
        }
        // a driver stuck waiting for a reply still reports, as an error, when time is up
        int unfinished = 0;
        for (Thread th : all) {
            th.join(Math.max(1, deadline - System.currentTimeMillis()));
            if (th.isAlive())
                unfinished++;
        }
        if (unfinished > 0)
            error("watchdog", new Exception(unfinished + " threads still waiting after " + args[7] + " s"));
        synchronized (PgjdbcDriver.class) {
            System.out.println("{\"expected\": " + threads * iterations + ", \"ok\": " + ok + ", \"errors\": " + errors
                    + ", \"error_samples\": " + json(errorSamples) + ", \"wrong\": " + wrong + ", \"wrong_samples\": "
                    + json(wrongSamples) + ", \"driver\": " + json(org.postgresql.util.DriverInfo.DRIVER_FULL_NAME)
                    + "}");
        }
        System.exit(0);
    }
}
