"""Edge: sources that turn machine signals into frames on the bus (simulator, and later OPC-UA,
Modbus TCP, MQTT and file replay)."""
