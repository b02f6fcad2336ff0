"""The embedded amqtt broker, its fleet auth/ACL plugins, and the equivalent Mosquitto config."""
