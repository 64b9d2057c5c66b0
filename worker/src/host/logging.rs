//! `alga:extension/logging`: into the execution log (tracing target `ext`
//! and the debug stream, `stream=log`); silently dropped without
//! `cap:log.emit` (granted by default).

use crate::bindings::alga::extension::logging;
use crate::capabilities::Capability;
use crate::host::HostState;
use crate::logs::Level;

impl HostState {
    fn guest_log(&mut self, level: Level, message: &str) {
        if self.caps.has(Capability::LogEmit) {
            self.logs.push(level, "log", message);
        }
    }
}

impl logging::Host for HostState {
    async fn log_info(&mut self, message: String) -> wasmtime::Result<()> {
        self.guest_log(Level::Info, &message);
        Ok(())
    }

    async fn log_warn(&mut self, message: String) -> wasmtime::Result<()> {
        self.guest_log(Level::Warn, &message);
        Ok(())
    }

    async fn log_error(&mut self, message: String) -> wasmtime::Result<()> {
        self.guest_log(Level::Error, &message);
        Ok(())
    }
}
