//! Docker's `user` field resolved against the container's /etc/passwd and /etc/group:
//! `name`, `uid`, `name:group`, `uid:gid` (any mix). A name must exist; a numeric uid
//! need not (its gid is then 0 and its home `/`), as in Docker.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: every group of /etc/group that lists the user by name.
    pub groups: Vec<u32>,
    pub home: String,
}

struct Passwd<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = Passwd<'_>> {
    passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        Some(Passwd {
            name: f.first()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
            home: f.get(5).copied().unwrap_or("/"),
        })
    })
}

/// (name, gid, members) of each well-formed /etc/group line.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let members = f
            .get(3)
            .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        Some((*f.first()?, f.get(2)?.parse().ok()?, members))
    })
}

/// Resolves `spec` (empty: root) with the contents of the container's /etc/passwd and
/// /etc/group (empty strings if the image has none).
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Identity, String> {
    let (user, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|p| p.uid == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|p| p.name == user)
                .ok_or_else(|| {
                    format!(
                "user `{user}` is not in the container's /etc/passwd: create it in the image \
                 or set `user:` to a numeric uid[:gid]"
            )
                })?,
        ),
    };
    let uid = entry
        .as_ref()
        .map_or_else(|| user.parse().unwrap_or(0), |p| p.uid);
    let mut gid = entry.as_ref().map_or(0, |p| p.gid);
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|(name, _, _)| *name == g)
                .map(|(_, gid, _)| gid)
                .ok_or_else(|| {
                    format!(
                        "group `{g}` is not in the container's /etc/group: create it in the \
                         image or use a numeric gid"
                    )
                })?,
        };
    }
    let mut groups: Vec<u32> = match &entry {
        Some(p) => group_entries(group)
            .filter(|(_, _, members)| members.contains(&p.name))
            .map(|(_, gid, _)| gid)
            .collect(),
        None => Vec::new(),
    };
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    Ok(Identity {
        uid,
        gid,
        groups,
        home: entry.map_or("/", |p| p.home).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        etcd:x:100:101:etcd:/var/lib/etcd:/usr/sbin/nologin\n\
        alice:x:1000:1000::/home/alice:/bin/sh\nbroken line\n";
    const GROUP: &str = "root:x:0:\netcd:x:101:\nalice:x:1000:\nstaff:x:50:alice,bob\n";

    #[test]
    fn names_and_numbers() {
        let root = resolve("", PASSWD, GROUP).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        let etcd = resolve("etcd", PASSWD, GROUP).unwrap();
        assert_eq!(
            (etcd.uid, etcd.gid, etcd.groups.as_slice()),
            (100, 101, &[101][..])
        );
        let alice = resolve("alice", PASSWD, GROUP).unwrap();
        assert_eq!((alice.uid, alice.gid), (1000, 1000));
        assert_eq!(alice.groups, [1000, 50]);
        assert_eq!(resolve("1000", PASSWD, GROUP).unwrap(), alice);
        let custom = resolve("alice:staff", PASSWD, GROUP).unwrap();
        assert_eq!((custom.uid, custom.gid), (1000, 50));
        let numeric = resolve("4242:4343", PASSWD, GROUP).unwrap();
        assert_eq!(
            (numeric.uid, numeric.gid, numeric.home.as_str()),
            (4242, 4343, "/")
        );
        let no_entry = resolve("4242", "", "").unwrap();
        assert_eq!((no_entry.uid, no_entry.gid), (4242, 0));
    }

    #[test]
    fn unknown_names_say_what_to_fix() {
        let e = resolve("nosuch", PASSWD, GROUP).unwrap_err();
        assert!(
            e.contains("`nosuch` is not in the container's /etc/passwd"),
            "{e}"
        );
        let e = resolve("alice:nogroup", PASSWD, GROUP).unwrap_err();
        assert!(
            e.contains("`nogroup` is not in the container's /etc/group"),
            "{e}"
        );
    }
}
