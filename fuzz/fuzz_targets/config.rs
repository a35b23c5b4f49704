//! Configuration files (TOML, `--config` and `DATANEXUS_CONFIG`): loading any text must
//! never panic, and a configuration it accepts validates.
#![no_main]

use datanexus_config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(config) = Config::from_toml_str(text)
    {
        assert!(config.validate().is_ok());
    }
});
