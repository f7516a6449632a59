import { newId } from "../../core/ids";
import type { Db } from "./client";
import { auditEvents } from "./schema";

export type AuditInput = { accountId: string; actor: string; action: string; target: string; requestId: string; detail?: string };

/** An audit event; write it in the same batch as the change it records. */
export function auditInsert(d: Db, e: AuditInput, now: Date) {
  return d.insert(auditEvents).values({ id: newId("evt"), createdAt: now.toISOString(), ...e });
}

/**
 * An audit event written only when the statement just before it in the same batch changed a row:
 * a guarded update and its event land together or not at all.
 */
export function auditIfChanged(d1: D1Database, e: AuditInput, now: Date): D1PreparedStatement {
  return d1
    .prepare(
      `INSERT INTO audit_events (id, account_id, actor, action, target, created_at, request_id, detail)
       SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE changes() = 1`,
    )
    .bind(newId("evt"), e.accountId, e.actor, e.action, e.target, now.toISOString(), e.requestId, e.detail ?? null);
}
