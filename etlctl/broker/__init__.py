"""RabbitMQ: broker settings, connections, publishing with confirms, peeking at queues.

pika is imported only inside functions that talk to a broker, so commands that
never reach one (and ``--help``) do not pay for importing it.
"""
