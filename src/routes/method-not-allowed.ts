import { ApiError } from "../errors";

/** A handler for the other methods of a path: 405 naming the allowed ones. */
export function allow(...methods: string[]) {
  return (): never => {
    throw new ApiError("method_not_allowed", `Use ${methods.join(" or ")} on this path.`, { headers: { Allow: methods.join(", ") } });
  };
}
