// A real single-node OpenSearch (the org.opensearch:opensearch jars from Maven Central) for Spillway's tests:
// started by scripts/opensearch.mjs, HTTP on 127.0.0.1 only. Netty4 is passed as a classpath plugin, as the
// distribution's modules/ folder is not there. Usage: java -cp 'libs/*' SpillwayOpenSearch.java HOME HTTP_PORT TRANSPORT_PORT
import java.nio.file.Path;
import java.util.List;
import org.opensearch.common.settings.Settings;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.transport.Netty4Plugin;

public class SpillwayOpenSearch {
  static final class EmbeddedNode extends Node {
    EmbeddedNode(Settings settings) {
      super(InternalSettingsPreparer.prepareEnvironment(settings, java.util.Map.of(), null, () -> "spillway-test"),
          List.of(Netty4Plugin.class), true);
    }
  }

  public static void main(String[] args) throws Exception {
    Path home = Path.of(args[0]).toAbsolutePath();
    Settings settings = Settings.builder()
        .put("path.home", home.toString())
        .put("path.data", home.resolve("data").toString())
        .put("path.logs", home.resolve("logs").toString())
        .put("cluster.name", "spillway-test")
        .put("node.name", "spillway-test-0")
        .put("discovery.type", "single-node")
        .put("network.host", "127.0.0.1")
        .put("http.port", args[1])
        .put("transport.port", args[2])
        .put("http.type", "netty4")
        .put("transport.type", "netty4")
        .put("action.auto_create_index", "true")
        .put("cluster.routing.allocation.disk.threshold_enabled", "false")
        .build();
    Node node = new EmbeddedNode(settings);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      try { node.close(); } catch (Exception e) { /* exiting */ }
    }));
    node.start();
    System.out.println("spillway-opensearch: started on 127.0.0.1:" + args[1]);
    Thread.currentThread().join();
  }
}
