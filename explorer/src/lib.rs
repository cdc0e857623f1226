//! detvm's explorer: the command line and, later, compose runs and campaigns.

pub mod boot_cmd;
pub mod cli;
pub mod compose;
pub mod composer;
pub mod doctor_cmd;
pub mod image_cmd;
pub mod moment;
pub mod paths;
pub mod properties;
pub mod report;
pub mod run;
pub mod run_cmd;
pub mod store;
