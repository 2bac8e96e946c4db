// Readiness check for the local Kafka broker (dev/stack). The broker's port opens before it can
// serve, so this polls describeCluster with the AdminClient until the cluster lists a node.
//
//   java -cp '<STACK_DIR>/kafka/lib/*' dev/kafka/KafkaReady.java <bootstrap> <deadline-seconds> [broker-pid]
//        [--scram-user <name> --sasl-bootstrap <host:port>]
//
// With --scram-user, once the broker is ready this also creates or updates the SCRAM-SHA-512
// credential of <name> (an upsert: idempotent, and the way to change the password), with the
// password read from the environment variable STACK_KAFKA_SASL_PASSWORD (never from the command
// line, which `ps` shows). It then waits until that user can log in on the SASL_PLAINTEXT listener
// at <host:port>: the credential travels through the metadata log, so the broker may refuse it
// for a moment after the upsert returns.
//
// Exit codes: 0 ready, 1 deadline passed, 2 usage, 3 the broker process (optional pid) died,
// 4 the SCRAM user could not be set up or cannot log in on the SASL listener before the deadline.

import org.apache.kafka.clients.CommonClientConfigs;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.config.SaslConfigs;

import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

public class KafkaReady {

    static final String PASSWORD_ENV = "STACK_KAFKA_SASL_PASSWORD";
    static final int SCRAM_ITERATIONS = 8192;

    static void usage() {
        System.err.println("usage: KafkaReady <bootstrap> <deadline-seconds> [broker-pid]"
                + " [--scram-user <name> --sasl-bootstrap <host:port>]");
        System.exit(2);
    }

    public static void main(String[] args) throws InterruptedException {
        List<String> positional = new ArrayList<>();
        String scramUser = null;
        String saslBootstrap = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--scram-user" -> {
                    if (++i == args.length) usage();
                    scramUser = args[i];
                }
                case "--sasl-bootstrap" -> {
                    if (++i == args.length) usage();
                    saslBootstrap = args[i];
                }
                default -> positional.add(args[i]);
            }
        }
        if (positional.size() < 2 || positional.size() > 3 || (scramUser == null) != (saslBootstrap == null)) {
            usage();
        }
        String bootstrap = positional.get(0);
        long deadlineSeconds = Long.parseLong(positional.get(1));
        Optional<ProcessHandle> broker = positional.size() == 3
                ? ProcessHandle.of(Long.parseLong(positional.get(2)))
                : Optional.empty();
        if (positional.size() == 3 && broker.isEmpty()) {
            System.err.println("KafkaReady: broker process " + positional.get(2) + " is not running");
            System.exit(3);
        }
        String password = null;
        if (scramUser != null) {
            password = System.getenv(PASSWORD_ENV);
            if (password == null || password.isEmpty()) {
                System.err.println("KafkaReady: --scram-user needs the password in " + PASSWORD_ENV);
                System.exit(2);
            }
        }

        long start = System.nanoTime();
        long deadline = start + TimeUnit.SECONDS.toNanos(deadlineSeconds);

        try (Admin admin = Admin.create(adminProps(bootstrap))) {
            String clusterLine = awaitCluster(admin, bootstrap, deadline, broker, deadlineSeconds, 1);
            long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
            System.out.println("Kafka ready at " + bootstrap + ": " + clusterLine + " (" + ms + " ms)");
            if (scramUser != null) {
                upsertScramUser(admin, scramUser, password, deadline, broker, deadlineSeconds);
            }
        }
        if (scramUser != null) {
            Properties sasl = adminProps(saslBootstrap);
            sasl.put(CommonClientConfigs.SECURITY_PROTOCOL_CONFIG, "SASL_PLAINTEXT");
            sasl.put(SaslConfigs.SASL_MECHANISM, "SCRAM-SHA-512");
            sasl.put(SaslConfigs.SASL_JAAS_CONFIG, "org.apache.kafka.common.security.scram.ScramLoginModule required"
                    + " username=\"" + jaasEscape(scramUser) + "\" password=\"" + jaasEscape(password) + "\";");
            try (Admin admin = Admin.create(sasl)) {
                awaitCluster(admin, saslBootstrap, deadline, broker, deadlineSeconds, 4);
            }
            long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
            System.out.println("Kafka SASL_PLAINTEXT listener at " + saslBootstrap + ": SCRAM-SHA-512 user "
                    + scramUser + " logs in (" + ms + " ms)");
        }
    }

    static Properties adminProps(String bootstrap) {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.CLIENT_ID_CONFIG, "stack-ready-check");
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "2000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, "100");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        props.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "100");
        props.put(AdminClientConfig.RETRY_BACKOFF_MAX_MS_CONFIG, "500");
        return props;
    }

    // A JAAS option value goes between double quotes: escape backslashes and quotes.
    static String jaasEscape(String value) {
        return value.replace("\\", "\\\\").replace("\"", "\\\"");
    }

    static void checkBroker(Optional<ProcessHandle> broker) {
        if (broker.isPresent() && !broker.get().isAlive()) {
            System.err.println("KafkaReady: broker process " + broker.get().pid() + " exited while waiting");
            System.exit(3);
        }
    }

    // Polls describeCluster until the cluster lists a node; exits with `failCode` at the deadline.
    static String awaitCluster(Admin admin, String bootstrap, long deadline, Optional<ProcessHandle> broker,
            long deadlineSeconds, int failCode) throws InterruptedException {
        String lastProblem = "no answer yet";
        while (System.nanoTime() < deadline) {
            checkBroker(broker);
            try {
                DescribeClusterResult cluster = admin.describeCluster(new DescribeClusterOptions().timeoutMs(2500));
                Collection<Node> nodes = cluster.nodes().get(3, TimeUnit.SECONDS);
                if (!nodes.isEmpty()) {
                    return "cluster " + cluster.clusterId().get() + ", nodes " + nodes;
                }
                lastProblem = "cluster lists no nodes yet";
            } catch (ExecutionException e) {
                lastProblem = String.valueOf(e.getCause());
            } catch (java.util.concurrent.TimeoutException e) {
                lastProblem = "describeCluster timed out";
            }
            Thread.sleep(250);
        }
        System.err.println("KafkaReady: Kafka at " + bootstrap + " not ready after " + deadlineSeconds
                + " s (last: " + lastProblem + ")");
        System.exit(failCode);
        return null;
    }

    static void upsertScramUser(Admin admin, String user, String password, long deadline,
            Optional<ProcessHandle> broker, long deadlineSeconds) throws InterruptedException {
        UserScramCredentialUpsertion upsertion = new UserScramCredentialUpsertion(user,
                new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS), password);
        String lastProblem = "no answer yet";
        while (System.nanoTime() < deadline) {
            checkBroker(broker);
            try {
                admin.alterUserScramCredentials(List.of(upsertion)).all().get(5, TimeUnit.SECONDS);
                return;
            } catch (ExecutionException e) {
                lastProblem = String.valueOf(e.getCause());
            } catch (java.util.concurrent.TimeoutException e) {
                lastProblem = "alterUserScramCredentials timed out";
            }
            Thread.sleep(250);
        }
        System.err.println("KafkaReady: could not set the SCRAM-SHA-512 credential of " + user + " within "
                + deadlineSeconds + " s (last: " + lastProblem + ")");
        System.exit(4);
    }
}
