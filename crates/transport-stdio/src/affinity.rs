//! Which CPUs a child process or a thread may run on: what
//! [`ChildCommand::cpus`](crate::ChildCommand::cpus) sets for a child, and
//! what a node sets for a module's thread. Linux only; elsewhere each call
//! fails saying so.
//!
//! ```
//! use botbus_transport_stdio::affinity;
//!
//! // An empty set is refused before any system call.
//! let refused = affinity::pin_this_thread(&[]).unwrap_err();
//! assert!(refused.to_string().contains("no CPU"), "{refused}");
//!
//! #[cfg(target_os = "linux")]
//! {
//!     let cpus = affinity::usable_cpus().unwrap();
//!     std::thread::spawn(move || affinity::pin_this_thread(&cpus[..1])).join().unwrap().unwrap();
//! }
//! ```

use std::io;

/// Runs the calling thread only on the CPUs numbered `cpus` from now on.
/// The error names what was wrong: an empty set, a CPU past the highest
/// the system can name, or a set this process may not use (with the CPUs
/// it may).
pub fn pin_this_thread(cpus: &[usize]) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let set = cpu_set(cpus)?;
        rustix::thread::sched_setaffinity(None, &set).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot run on CPUs {cpus:?}: {}; {}", io::Error::from(error), allowed()),
            )
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        cpu_list_checked(cpus)?;
        Err(unsupported())
    }
}

/// `cpus` as the kernel's set, checked: not empty, and each CPU one the
/// system can name.
#[cfg(target_os = "linux")]
pub(crate) fn cpu_set(cpus: &[usize]) -> io::Result<rustix::thread::CpuSet> {
    cpu_list_checked(cpus)?;
    let mut set = rustix::thread::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu);
    }
    Ok(set)
}

fn cpu_list_checked(cpus: &[usize]) -> io::Result<()> {
    let invalid = |message: String| Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    if cpus.is_empty() {
        return invalid("a set of no CPU: name at least one".to_owned());
    }
    #[cfg(target_os = "linux")]
    if let Some(cpu) = cpus.iter().find(|&&cpu| cpu >= rustix::thread::CpuSet::MAX_CPU) {
        return invalid(format!(
            "CPU {cpu} is past the highest this system can name ({})",
            rustix::thread::CpuSet::MAX_CPU - 1
        ));
    }
    Ok(())
}

/// The CPUs this process's main thread may run on, lowest first: the ones
/// a child or a thread can be pinned to.
pub fn usable_cpus() -> io::Result<Vec<usize>> {
    #[cfg(target_os = "linux")]
    {
        let set = rustix::thread::sched_getaffinity(Some(rustix::process::getpid()))?;
        Ok((0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&cpu| set.is_set(cpu))
            .collect())
    }
    #[cfg(not(target_os = "linux"))]
    Err(unsupported())
}

/// [`usable_cpus`] as a clause for an error.
pub(crate) fn allowed() -> String {
    match usable_cpus() {
        Ok(cpus) => format!("this process may use CPUs {cpus:?}"),
        Err(error) => format!("the CPUs this process may use are unknown ({error})"),
    }
}

/// The error for a platform with no CPU affinity here.
#[cfg(not(target_os = "linux"))]
pub(crate) fn unsupported() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "CPU affinity is supported on Linux only")
}
