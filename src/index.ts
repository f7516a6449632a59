import { app } from "./app";

export { Counter } from "./objects/counter";
export { KeyObject } from "./objects/key";

export default app;
