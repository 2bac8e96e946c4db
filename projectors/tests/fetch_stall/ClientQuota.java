// Sets or removes a Kafka client quota on `consumer_byte_rate` for one client id, for the
// projectors' fetch-stall test (projectors/tests/fetch_stall.rs). librdkafka's admin API has no
// AlterClientQuotas, and Kafka 4's `kafka-configs` tool is not among the jars dev/stack resolves,
// so this uses kafka-clients' Admin directly:
//
//   java -cp '<STACK_DIR>/kafka/lib/*' ClientQuota.java <bootstrap> <client-id> <bytes-per-second>
//   java -cp '<STACK_DIR>/kafka/lib/*' ClientQuota.java <bootstrap> <client-id> remove
//
// It returns once DescribeClientQuotas, which the broker answers from the metadata it applies
// quotas from, shows the new value (or none). Exit codes: 0 done, 1 failed, 2 usage.

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.quota.ClientQuotaAlteration;
import org.apache.kafka.common.quota.ClientQuotaEntity;
import org.apache.kafka.common.quota.ClientQuotaFilter;
import org.apache.kafka.common.quota.ClientQuotaFilterComponent;

import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

public class ClientQuota {
    static final String KEY = "consumer_byte_rate";

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: ClientQuota <bootstrap> <client-id> <bytes-per-second>|remove");
            System.exit(2);
        }
        String clientId = args[1];
        Double rate = args[2].equals("remove") ? null : Double.valueOf(args[2]);
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.CLIENT_ID_CONFIG, "storefront-tests-quota");
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        ClientQuotaEntity entity = new ClientQuotaEntity(Map.of(ClientQuotaEntity.CLIENT_ID, clientId));
        ClientQuotaFilter filter = ClientQuotaFilter.containsOnly(
                List.of(ClientQuotaFilterComponent.ofEntity(ClientQuotaEntity.CLIENT_ID, clientId)));
        try (Admin admin = Admin.create(props)) {
            admin.alterClientQuotas(List.of(new ClientQuotaAlteration(entity,
                    List.of(new ClientQuotaAlteration.Op(KEY, rate))))).all().get(30, TimeUnit.SECONDS);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (true) {
                Map<String, Double> quotas = admin.describeClientQuotas(filter).entities()
                        .get(30, TimeUnit.SECONDS).getOrDefault(entity, Map.of());
                Double now = quotas.get(KEY);
                if (rate == null ? now == null : rate.equals(now)) {
                    System.out.println("client " + clientId + ": " + KEY + " " + (rate == null ? "removed" : rate));
                    return;
                }
                if (System.nanoTime() > deadline) {
                    System.err.println("ClientQuota: " + KEY + " of " + clientId + " is " + now + ", not " + rate);
                    System.exit(1);
                }
                Thread.sleep(100);
            }
        }
    }
}
