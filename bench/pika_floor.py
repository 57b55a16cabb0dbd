"""The relay's floor: a bare pika loop that publishes the same bodies, with the same properties, to the
same queue, waiting for the broker's confirm of each message (pika's BlockingChannel in confirm mode,
as a worker-side script would write it).

usage: pika_floor.py AMQP_URL QUEUE BODIES_JSONL
"""

import json
import sys
import time

import pika

url, queue, path = sys.argv[1:4]
with open(path, encoding="utf-8") as f:
    messages = [json.loads(line) for line in f]
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.confirm_delivery()
for message in messages:
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/json", message_id=message["id"],
                                      app_id="etlctl", timestamp=int(time.time()))
    channel.basic_publish("", queue, message["body"].encode(), properties, mandatory=True)
connection.close()
