// Readiness check for the local Kafka broker (dev/stack). The broker's port opens before it can
// serve, so this polls describeCluster with the AdminClient until the cluster lists a node.
//
//   java -cp '<STACK_DIR>/kafka/lib/*' dev/kafka/KafkaReady.java <bootstrap> <deadline-seconds> [broker-pid]
//
// Exit codes: 0 ready, 1 deadline passed, 2 usage, 3 the broker process (optional pid) died.

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.common.Node;

import java.util.Collection;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

public class KafkaReady {

    public static void main(String[] args) throws InterruptedException {
        if (args.length < 2 || args.length > 3) {
            System.err.println("usage: KafkaReady <bootstrap> <deadline-seconds> [broker-pid]");
            System.exit(2);
        }
        String bootstrap = args[0];
        long deadlineSeconds = Long.parseLong(args[1]);
        Optional<ProcessHandle> broker = args.length == 3
                ? ProcessHandle.of(Long.parseLong(args[2]))
                : Optional.empty();
        if (args.length == 3 && broker.isEmpty()) {
            System.err.println("KafkaReady: broker process " + args[2] + " is not running");
            System.exit(3);
        }

        long start = System.nanoTime();
        long deadline = start + TimeUnit.SECONDS.toNanos(deadlineSeconds);

        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.CLIENT_ID_CONFIG, "stack-ready-check");
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "2000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, "100");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        props.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "100");
        props.put(AdminClientConfig.RETRY_BACKOFF_MAX_MS_CONFIG, "500");

        String lastProblem = "no answer yet";
        try (Admin admin = Admin.create(props)) {
            while (System.nanoTime() < deadline) {
                if (broker.isPresent() && !broker.get().isAlive()) {
                    System.err.println("KafkaReady: broker process " + broker.get().pid() + " exited while waiting");
                    System.exit(3);
                }
                try {
                    DescribeClusterResult cluster = admin.describeCluster(new DescribeClusterOptions().timeoutMs(2500));
                    Collection<Node> nodes = cluster.nodes().get(3, TimeUnit.SECONDS);
                    if (!nodes.isEmpty()) {
                        long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
                        System.out.println("Kafka ready at " + bootstrap + ": cluster " + cluster.clusterId().get()
                                + ", nodes " + nodes + " (" + ms + " ms)");
                        return;
                    }
                    lastProblem = "cluster lists no nodes yet";
                } catch (ExecutionException e) {
                    lastProblem = String.valueOf(e.getCause());
                } catch (java.util.concurrent.TimeoutException e) {
                    lastProblem = "describeCluster timed out";
                }
                Thread.sleep(250);
            }
        }
        System.err.println("KafkaReady: Kafka at " + bootstrap + " not ready after " + deadlineSeconds
                + " s (last: " + lastProblem + ")");
        System.exit(1);
    }
}
