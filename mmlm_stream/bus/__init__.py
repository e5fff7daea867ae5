"""Getting records out: the Redis transport, its outbox and embedded server, the subscriber
client.
"""
