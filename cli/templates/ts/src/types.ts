// The records of wit/alga-extension.wit that the handler sees, as jco maps them to
// JavaScript (kebab-case names become camelCase; `option<T>` is `T | undefined`;
// `list<u8>` is a Uint8Array). `npx jco types wit -o src/wit` generates every interface.

export interface HttpHeader {
  name: string;
  value: string;
}

export interface ContextData {
  requestId?: string;
  tenantId: string;
  extensionId: string;
  installId?: string;
  versionId?: string;
}

export interface HttpRequest {
  method: string;
  url: string;
  headers: HttpHeader[];
  body?: Uint8Array;
}

export interface ExecuteRequest {
  context: ContextData;
  http: HttpRequest;
}

export interface ExecuteResponse {
  status: number;
  headers: HttpHeader[];
  body?: Uint8Array;
}
