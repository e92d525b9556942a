/*
 * The cross-check's ZooKeeper load (bench/crosscheck.mjs): the comparison's registration
 * and bare-listing workloads, driven by ZooKeeper's own Java client instead of the Node
 * client, so that the ZooKeeper figures can be checked against an independent client.
 *
 *   java -cp <dir>:<ZooKeeper jars> ZkLoad HOSTS MODE SESSIONS WARMUP_MS DURATION_MS PAYLOAD_BYTES
 *
 * MODE create: each session creates ephemeral znodes (PAYLOAD_BYTES of data) under one
 * parent, one call at a time, as a registering process does. MODE children: 20 ephemeral
 * children exist; each session lists the parent (getChildren, no watch), one call at a time.
 * One ZooKeeper session (one connection) per thread; session timeout 4 s, the suite's TTL.
 *
 * Prints "measure" when the measured window starts, "measured" when every thread has
 * stopped, then one JSON line with the figures. Only calls that start and end inside the
 * window count. Errors are counted, not retried; the first three are printed on stderr.
 */
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.ZooKeeper;

public class ZkLoad {
  /** Latencies kept per thread (a bound on memory: 8 bytes each). */
  static final int MAX_SAMPLES_PER_THREAD = 200_000;
  static final int CHILDREN = 20;
  static final int SESSION_TIMEOUT_MS = 4000;

  public static void main(String[] args) throws Exception {
    if (args.length != 6) {
      System.err.println("usage: ZkLoad HOSTS create|children SESSIONS WARMUP_MS DURATION_MS PAYLOAD_BYTES");
      System.exit(2);
    }
    String hosts = args[0];
    String mode = args[1];
    if (!mode.equals("create") && !mode.equals("children")) throw new IllegalArgumentException("mode must be create or children, not " + mode);
    int sessions = Integer.parseInt(args[2]);
    long warmupMs = Long.parseLong(args[3]);
    long durationMs = Long.parseLong(args[4]);
    byte[] payload = new byte[Integer.parseInt(args[5])];
    Arrays.fill(payload, (byte) 'x');
    String parent = "/crosscheck-" + mode + "-" + System.nanoTime();

    // Every session is opened at once and awaited together.
    ZooKeeper[] zks = new ZooKeeper[sessions];
    CountDownLatch connected = new CountDownLatch(sessions);
    for (int i = 0; i < sessions; i++) {
      zks[i] = new ZooKeeper(hosts, SESSION_TIMEOUT_MS, e -> {
        if (e.getState() == Watcher.Event.KeeperState.SyncConnected) connected.countDown();
      });
    }
    if (!connected.await(60, TimeUnit.SECONDS)) throw new IllegalStateException("not every session connected within 60 s");
    zks[0].create(parent, new byte[0], ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
    if (mode.equals("children")) {
      for (int i = 0; i < CHILDREN; i++) zks[0].create(parent + "/i-" + i, payload, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL);
    }

    long start = System.nanoTime();
    long measureFrom = start + warmupMs * 1_000_000L;
    long measureTo = measureFrom + durationMs * 1_000_000L;
    AtomicLong errors = new AtomicLong();
    Map<String, Long> errorKinds = new ConcurrentHashMap<>();
    List<long[]> perThread = new ArrayList<>();
    int[] counts = new int[sessions];
    Thread[] threads = new Thread[sessions];
    for (int i = 0; i < sessions; i++) {
      final int t = i;
      final ZooKeeper zk = zks[i];
      final long[] lat = new long[MAX_SAMPLES_PER_THREAD];
      perThread.add(lat);
      threads[i] = new Thread(() -> {
        long seq = 0;
        int n = 0;
        while (true) {
          long s = System.nanoTime();
          if (s >= measureTo) break;
          try {
            if (mode.equals("create")) zk.create(parent + "/t" + t + "-" + (seq++), payload, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL);
            else zk.getChildren(parent, false);
          } catch (KeeperException | InterruptedException e) {
            if (errors.incrementAndGet() <= 3) System.err.println("ZkLoad: " + e);
            errorKinds.merge(e.getClass().getSimpleName(), 1L, Long::sum);
            continue;
          }
          long f = System.nanoTime();
          if (s >= measureFrom && f <= measureTo && n < lat.length) lat[n++] = f - s;
        }
        counts[t] = n;
      }, "load-" + i);
      threads[i].start();
    }
    long untilMeasure = (measureFrom - System.nanoTime()) / 1_000_000L;
    if (untilMeasure > 0) Thread.sleep(untilMeasure);
    System.out.println("measure");
    System.out.flush();
    for (Thread th : threads) th.join();
    System.out.println("measured");
    System.out.flush();

    int total = 0;
    for (int c : counts) total += c;
    long[] all = new long[total];
    int at = 0;
    for (int i = 0; i < sessions; i++) {
      System.arraycopy(perThread.get(i), 0, all, at, counts[i]);
      at += counts[i];
    }
    Arrays.sort(all);
    String p50 = total > 0 ? String.format(java.util.Locale.ROOT, "%.3f", all[total / 2] / 1e6) : "null";
    String p99 = total > 0 ? String.format(java.util.Locale.ROOT, "%.3f", all[Math.min(total - 1, (int) (total * 0.99))] / 1e6) : "null";
    StringBuilder kinds = new StringBuilder("{");
    for (Map.Entry<String, Long> e : errorKinds.entrySet()) {
      if (kinds.length() > 1) kinds.append(',');
      kinds.append('"').append(e.getKey()).append("\":").append(e.getValue());
    }
    kinds.append('}');
    System.out.printf(java.util.Locale.ROOT, "{\"mode\":\"%s\",\"sessions\":%d,\"ops\":%d,\"opsPerSec\":%.1f,\"p50Ms\":%s,\"p99Ms\":%s,\"errors\":%d,\"errorKinds\":%s}%n",
        mode, sessions, total, total * 1000.0 / durationMs, p50, p99, errors.get(), kinds);
    System.out.flush();
    for (ZooKeeper z : zks) z.close();
  }
}
