import { app } from "./http/app";

export { AccountObject } from "./counters/account-object";
export { Counter } from "./counters/counter-object";
export { KeyObject } from "./keys/object";
export { KeygateVerifier } from "./verifier";

export default app;
