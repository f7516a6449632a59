import { app } from "./app";

export { Counter } from "./objects/counter";
export { KeyObject } from "./objects/key";
export { KeygateVerifier } from "./verifier";

export default app;
