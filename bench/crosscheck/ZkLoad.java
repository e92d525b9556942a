/*
 * The cross-check's ZooKeeper load (bench/crosscheck.mjs): the comparison's registration
 * and bare-listing workloads, driven by ZooKeeper's own Java client instead of the Node
 * client, so that the ZooKeeper figures can be checked against an independent client.
 *
 *   java -cp <dir>:<ZooKeeper jars> ZkLoad HOSTS MODE SESSIONS WARMUP_MS DURATION_MS PAYLOAD_BYTES SESSION_TIMEOUT_MS
 *
 * MODE create: each session creates ephemeral znodes (PAYLOAD_BYTES of data) under a
 * parent of its own, one call at a time, as a registering process of the comparison does
 * (each of its clients registers into its own service). MODE children: 20 ephemeral
 * children exist; each session lists their parent (getChildren, no watch), one call at a
 * time. One ZooKeeper session (one connection) per thread.
 *
 * Prints "measure" when the measured window starts, "measured" when every thread has
 * stopped, then one JSON line with the figures. Only calls that start and end inside the
 * window count, and only errors of calls that start inside it. Errors are counted, not
 * retried (the first three are printed on stderr); a session that expired stops its thread
 * and fails the run (exit 1), as does any unexpected exception.
 */
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.ZooKeeper;

public class ZkLoad {
  /** Latencies kept per thread (a bound on memory: 8 bytes each); calls beyond it still count, their latency is not kept. */
  static final int MAX_SAMPLES_PER_THREAD = 50_000;
  static final int CHILDREN = 20;

  public static void main(String[] args) throws Exception {
    if (args.length != 7) {
      System.err.println("usage: ZkLoad HOSTS create|children SESSIONS WARMUP_MS DURATION_MS PAYLOAD_BYTES SESSION_TIMEOUT_MS");
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
    int sessionTimeoutMs = Integer.parseInt(args[6]);
    String parent = "/crosscheck-" + mode + "-" + System.nanoTime();

    // Every session is opened at once and awaited together.
    ZooKeeper[] zks = new ZooKeeper[sessions];
    CountDownLatch connected = new CountDownLatch(sessions);
    for (int i = 0; i < sessions; i++) {
      zks[i] = new ZooKeeper(hosts, sessionTimeoutMs, e -> {
        if (e.getState() == Watcher.Event.KeeperState.SyncConnected) connected.countDown();
      });
    }
    if (!connected.await(60, TimeUnit.SECONDS)) throw new IllegalStateException("not every session connected within 60 s");
    zks[0].create(parent, new byte[0], ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
    if (mode.equals("create")) {
      for (int i = 0; i < sessions; i++) zks[0].create(parent + "/reg-" + i, new byte[0], ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
    } else {
      for (int i = 0; i < CHILDREN; i++) zks[0].create(parent + "/i-" + i, payload, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL);
    }

    long start = System.nanoTime();
    long measureFrom = start + warmupMs * 1_000_000L;
    long measureTo = measureFrom + durationMs * 1_000_000L;
    AtomicLong errors = new AtomicLong();
    AtomicLong ops = new AtomicLong();
    AtomicBoolean failed = new AtomicBoolean(false);
    Map<String, Long> errorKinds = new ConcurrentHashMap<>();
    List<long[]> perThread = new ArrayList<>();
    int[] counts = new int[sessions];
    Thread[] threads = new Thread[sessions];
    for (int i = 0; i < sessions; i++) {
      final int t = i;
      final ZooKeeper zk = zks[i];
      final long[] lat = new long[MAX_SAMPLES_PER_THREAD];
      perThread.add(lat);
      final String dir = mode.equals("create") ? parent + "/reg-" + t + "/i-" : null;
      threads[i] = new Thread(() -> {
        long seq = 0;
        int n = 0;
        while (true) {
          long s = System.nanoTime();
          if (s >= measureTo) break;
          try {
            if (dir != null) zk.create(dir + (seq++), payload, ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL);
            else zk.getChildren(parent, false);
          } catch (KeeperException | InterruptedException e) {
            if (s >= measureFrom) {
              if (errors.incrementAndGet() <= 3) System.err.println("ZkLoad: " + e);
              errorKinds.merge(e.getClass().getSimpleName(), 1L, Long::sum);
            }
            if (e instanceof KeeperException.SessionExpiredException || e instanceof InterruptedException) {
              System.err.println("ZkLoad: thread " + t + " stops: " + e);
              failed.set(true);
              break;
            }
            continue;
          }
          long f = System.nanoTime();
          if (s >= measureFrom && f <= measureTo) {
            ops.incrementAndGet();
            if (n < lat.length) lat[n++] = f - s;
          }
        }
        counts[t] = n;
      }, "load-" + i);
      threads[i].setUncaughtExceptionHandler((th, e) -> {
        System.err.println("ZkLoad: " + th.getName() + " failed: " + e);
        failed.set(true);
      });
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
    String p50 = percentile(all, 0.50);
    String p99 = percentile(all, 0.99);
    StringBuilder kinds = new StringBuilder("{");
    for (Map.Entry<String, Long> e : errorKinds.entrySet()) {
      if (kinds.length() > 1) kinds.append(',');
      kinds.append('"').append(e.getKey()).append("\":").append(e.getValue());
    }
    kinds.append('}');
    System.out.printf(java.util.Locale.ROOT, "{\"mode\":\"%s\",\"sessions\":%d,\"ops\":%d,\"opsPerSec\":%.1f,\"p50Ms\":%s,\"p99Ms\":%s,\"errors\":%d,\"errorKinds\":%s}%n",
        mode, sessions, ops.get(), ops.get() * 1000.0 / durationMs, p50, p99, errors.get(), kinds);
    System.out.flush();
    for (ZooKeeper z : zks) z.close();
    if (failed.get()) System.exit(1);
  }

  /** Nearest rank: the smallest latency with at least q of them at or below it (ms), or null. */
  static String percentile(long[] sorted, double q) {
    if (sorted.length == 0) return "null";
    int rank = (int) Math.ceil(q * sorted.length) - 1;
    return String.format(java.util.Locale.ROOT, "%.3f", sorted[Math.max(0, rank)] / 1e6);
  }
}
