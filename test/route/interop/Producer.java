// A producer other than kafkajs, for the router's interoperability tests: the Apache Kafka Java client, run as a
// single-file program (Java 11+) with the jars the local broker already uses:
//
//   java -cp '.cache/kafka/libs/*' test/route/interop/Producer.java BROKERS TOPIC CODEC RECORDS_FILE
//
// CODEC is a compression.type (none, gzip, snappy, lz4, zstd). RECORDS_FILE has one record a line:
// `PARTITION<TAB>KEY_HEX<TAB>VALUE_HEX`, with `-` as the key of a keyless record. All records are sent with
// acks=all, in one go (linger.ms so that they share compressed batches), then flushed; prints the count sent.
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HexFormat;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import java.util.ArrayList;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class Producer {
  public static void main(String[] args) throws Exception {
    if (args.length != 4) {
      System.err.println("usage: Producer BROKERS TOPIC CODEC RECORDS_FILE");
      System.exit(2);
    }
    Properties props = new Properties();
    props.put("bootstrap.servers", args[0]);
    props.put("compression.type", args[2]);
    props.put("acks", "all");
    props.put("linger.ms", "100");
    props.put("batch.size", "1048576");
    props.put("key.serializer", ByteArraySerializer.class.getName());
    props.put("value.serializer", ByteArraySerializer.class.getName());
    HexFormat hex = HexFormat.of();
    List<String> lines = Files.readAllLines(Path.of(args[3]));
    List<Future<RecordMetadata>> sent = new ArrayList<>();
    try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props)) {
      for (String line : lines) {
        if (line.isBlank()) continue;
        String[] f = line.split("\t", -1);
        byte[] key = f[1].equals("-") ? null : hex.parseHex(f[1]);
        sent.add(producer.send(new ProducerRecord<>(args[1], Integer.parseInt(f[0]), key, hex.parseHex(f[2]))));
      }
      producer.flush();
      for (Future<RecordMetadata> f : sent) f.get();
    }
    System.out.println("sent " + sent.size());
  }
}
