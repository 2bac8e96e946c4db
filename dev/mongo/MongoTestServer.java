// MongoDB test server for the local stack (dev/stack): mongo-java-server with the oplog on, so
// change streams work, and the H2 backend, so data and the oplog survive a restart.
//
// Run as a single-file source program (classpath resolved by dev/mongo/pom.xml):
//   java -cp '<STACK_DIR>/mongo/lib/*' dev/mongo/MongoTestServer.java \
//        [--host 127.0.0.1] [--port 27027] [--data <file>] [--backend h2|memory] [--version 6.0|7.0]
// Each option falls back to an environment variable: MONGO_HOST, MONGO_PORT, MONGO_DATA_FILE,
// MONGO_BACKEND, MONGO_REPORTED_VERSION.
//
// Prints "mongo-java-server ready on <host>:<port>" once it accepts connections. SIGTERM shuts the
// server down and closes the backend (H2: flushes and closes the MVStore file).

import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.AbstractMongoBackend;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

public class MongoTestServer {

    /**
     * The version the server reports in hello/isMaster and buildInfo. The library's own
     * ServerVersion values stop at "5.0" with wire version 8, but the Rust mongodb 3.x driver needs
     * wire version >= 9, and from wire version 25 (MongoDB 8.0) it sends the bulkWrite command,
     * which mongo-java-server lacks. Only the reported numbers change: the server's behaviour
     * does not depend on them.
     */
    enum ReportedVersion implements MongoVersion {
        MONGO_6_0("6.0", List.of(6, 0, 0), 17),
        MONGO_7_0("7.0", List.of(7, 0, 0), 21);

        final String name;
        private final List<Integer> versionArray;
        private final int wireVersion;

        ReportedVersion(String name, List<Integer> versionArray, int wireVersion) {
            this.name = name;
            this.versionArray = versionArray;
            this.wireVersion = wireVersion;
        }

        @Override
        public List<Integer> getVersionArray() {
            return versionArray;
        }

        @Override
        public int getWireVersion() {
            return wireVersion;
        }

        static ReportedVersion parse(String s) {
            for (ReportedVersion v : values()) {
                if (v.name.equals(s)) {
                    return v;
                }
            }
            throw new IllegalArgumentException("unsupported --version '" + s + "' (use 6.0 or 7.0)");
        }
    }

    // ---------------------------------------------------------------------------------------
    // Backends. Every backend the launcher runs is built here, as one of these subclasses, so a
    // later change can override `protected Oplog createOplog()` (AbstractMongoBackend) in one
    // place for both. MongoServer.enableOplog() calls createOplog() after construction.
    // ---------------------------------------------------------------------------------------

    /** H2 MVStore backend: data and the oplog live in one file and survive a restart. */
    static class StackH2Backend extends H2Backend {
        StackH2Backend(String file) {
            super(file);
        }
    }

    /** In-memory backend: keeps nothing across a restart. */
    static class StackMemoryBackend extends MemoryBackend {
    }

    static AbstractMongoBackend createBackend(String kind, Path dataFile) throws IOException {
        switch (kind) {
            case "h2":
                if (dataFile.getParent() != null) {
                    Files.createDirectories(dataFile.getParent());
                }
                return new StackH2Backend(dataFile.toString());
            case "memory":
                return new StackMemoryBackend();
            default:
                throw new IllegalArgumentException("unknown backend '" + kind + "' (use h2 or memory)");
        }
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> opts = parseArgs(args);
        String host = opt(opts, "host", "MONGO_HOST", "127.0.0.1");
        int port = Integer.parseInt(opt(opts, "port", "MONGO_PORT", "27027"));
        Path dataFile = Path.of(opt(opts, "data", "MONGO_DATA_FILE", "mongo-data/mongo.mv.db")).toAbsolutePath();
        String backendKind = opt(opts, "backend", "MONGO_BACKEND", "h2");
        ReportedVersion version = ReportedVersion.parse(opt(opts, "version", "MONGO_REPORTED_VERSION", "6.0"));

        AbstractMongoBackend backend = createBackend(backendKind, dataFile);
        backend.version(version);

        MongoServer server = new MongoServer(backend);
        server.enableOplog(); // without the oplog, change streams end at once

        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("mongo-java-server shutting down");
            try {
                server.shutdown(); // stops listening, then backend.close() (H2: closes the MVStore)
            } catch (RuntimeException e) {
                System.err.println("error during shutdown: " + e);
                backend.close();
            }
            System.out.println("mongo-java-server stopped");
            System.out.flush();
            stopped.countDown();
        }, "mongo-shutdown"));

        server.bind(host, port); // synchronous: the socket accepts connections when this returns

        System.out.println("mongo-java-server " + describe(backendKind, dataFile) + ", reports MongoDB "
                + version.toVersionString() + " (wire version " + version.getWireVersion() + "), oplog enabled");
        System.out.println("mongo-java-server ready on " + host + ":" + port);
        System.out.flush();

        stopped.await();
    }

    private static String describe(String kind, Path dataFile) {
        return kind.equals("h2") ? "backend h2 (" + dataFile + ")" : "backend " + kind + " (not persisted)";
    }

    private static Map<String, String> parseArgs(String[] args) {
        Map<String, String> opts = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (!a.startsWith("--")) {
                usage("unexpected argument '" + a + "'");
            }
            String key = a.substring(2);
            String value;
            int eq = key.indexOf('=');
            if (eq >= 0) {
                value = key.substring(eq + 1);
                key = key.substring(0, eq);
            } else if (i + 1 < args.length) {
                value = args[++i];
            } else {
                usage("missing value for --" + key);
                return opts;
            }
            if (!List.of("host", "port", "data", "backend", "version").contains(key)) {
                usage("unknown option --" + key);
            }
            opts.put(key, value);
        }
        return opts;
    }

    private static String opt(Map<String, String> opts, String key, String env, String dflt) {
        String v = opts.get(key);
        if (v == null || v.isEmpty()) {
            v = System.getenv(env);
        }
        return v == null || v.isEmpty() ? dflt : v;
    }

    private static void usage(String problem) {
        System.err.println("MongoTestServer: " + problem);
        System.err.println("usage: java -cp <jars> MongoTestServer.java [--host H] [--port P] [--data FILE]"
                + " [--backend h2|memory] [--version 6.0|7.0]");
        System.exit(2);
    }
}
