/** The tenant created at first start, whose admins manage the others. */
export const SYSTEM_TENANT_ID = 'default';
