// The host interfaces this extension imports (wit/alga-extension.wit). Add a module here
// for each interface you use, or generate them all with `npx jco types wit -o src/wit`.
declare module 'alga:extension/logging' {
  export function logInfo(message: string): void;
  export function logWarn(message: string): void;
  export function logError(message: string): void;
}
