import { app } from "./app";

export { RateLimiter } from "./ratelimit/durable-object";

export default app;
