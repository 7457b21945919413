"""B4: the F1 Kafka demo's analytics consumer, the way the demo ran it.

A confluent-kafka consumer polls one message at a time, parses it with
json.loads, adds the degradation score and fault flags, and produces the
enriched JSON, with the producer settings every rung of the benchmark uses.
It runs until killed.

    python seed_consumer.py BOOTSTRAP INPUT OUTPUT GROUP
"""

import json
import sys

from confluent_kafka import Consumer, Producer


def degradation_score(msg):
    temps = [msg["tire_temp_fl"], msg["tire_temp_fr"], msg["tire_temp_rl"], msg["tire_temp_rr"]]
    score = (sum(temps) / 4 - 80.0) / 35.0
    return round(min(max(score, 0.0), 1.0), 3)


def fault_flags(score, msg):
    flags = []
    if score > 0.65:
        flags.append("tire_wear")
    if msg.get("battery_soc", 0.5) < 0.4 and msg.get("ers_mode", "balanced") == "deploy":
        flags.append("low_battery_on_deploy")
    return flags


def main():
    bootstrap, source, sink, group = sys.argv[1:5]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "batch.num.messages": 10000,
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 1000000,
        }
    )
    consumer.subscribe([source])
    while True:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        data = json.loads(msg.value())
        score = degradation_score(data)
        data["degradation_score"] = score
        data["fault_flags"] = fault_flags(score, data)
        while True:
            try:
                producer.produce(sink, json.dumps(data).encode(), key=msg.key(), headers=msg.headers())
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)


if __name__ == "__main__":
    main()
