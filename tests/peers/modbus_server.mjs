// A Modbus TCP server of another project (modbus-serial) laid out like a plant's device:
// unit 1 holds HR0-17 (value 100 + address) and HR20-24 (500 + i); HR18-19 do not exist, so a
// read across them is refused with "illegal data address". Requests for any other unit id
// get no answer at all (modbus-serial's ServerTCP ignores them). Usage: node modbus_server.mjs PORT
import ModbusRTU from "modbus-serial";

const port = Number(process.argv[2]);
const registers = new Map();
for (let a = 0; a < 18; a++) registers.set(a, 100 + a);
for (let i = 0; i < 5; i++) registers.set(20 + i, 500 + i);

const vector = {
  getMultipleHoldingRegisters(address, length) {
    const values = [];
    for (let a = address; a < address + length; a++) {
      if (!registers.has(a)) throw { modbusErrorCode: 0x02, msg: "Illegal data address" };
      values.push(registers.get(a));
    }
    return values;
  },
  getHoldingRegister(address) {
    if (!registers.has(address)) throw { modbusErrorCode: 0x02, msg: "Illegal data address" };
    return registers.get(address);
  },
};

const server = new ModbusRTU.ServerTCP(vector, { host: "127.0.0.1", port, unitID: 1 });
server.on("initialized", () => console.log("listening"));
server.on("socketError", (err) => console.error("socket error", err.message));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
