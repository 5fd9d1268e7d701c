// An OPC-UA server of another project (node-opcua) laid out like the asyncua one of the tests:
// Press/Static (Double 7.5, never changes), Press/Pressure (Double, 100 + k every 50 ms) and
// Press/Curve (an array of three Doubles), in the server's own namespace (index 1).
// Usage: node opcua_server.mjs PORT
import { OPCUAServer, DataType, Variant, VariantArrayType, StatusCodes } from "node-opcua";

const port = Number(process.argv[2]);
const server = new OPCUAServer({ port, resourcePath: "/plc", buildInfo: { productName: "peer" } });
await server.initialize();
const namespace = server.engine.addressSpace.getOwnNamespace();
const press = namespace.addObject({
  organizedBy: server.engine.addressSpace.rootFolder.objects,
  browseName: "Press",
});
namespace.addVariable({
  componentOf: press, browseName: "Static", dataType: "Double",
  value: new Variant({ dataType: DataType.Double, value: 7.5 }),
});
let k = 0;
const pressure = namespace.addVariable({
  componentOf: press, browseName: "Pressure", dataType: "Double",
  value: new Variant({ dataType: DataType.Double, value: 100 }),
});
setInterval(() => {
  k += 1;
  pressure.setValueFromSource(new Variant({ dataType: DataType.Double, value: 100 + k }), StatusCodes.Good);
}, 50);
namespace.addVariable({
  componentOf: press, browseName: "Curve", dataType: "Double", valueRank: 1,
  value: new Variant({ dataType: DataType.Double, arrayType: VariantArrayType.Array, value: [1, 2, 3] }),
});
await server.start();
console.log("listening", server.getEndpointUrl());
process.on("SIGTERM", async () => { await server.shutdown(0); process.exit(0); });
