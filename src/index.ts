import { app } from "./http/app";

export { Counter } from "./counters/counter-object";
export { KeyObject } from "./keys/object";
export { KeygateVerifier } from "./verifier";

export default app;
