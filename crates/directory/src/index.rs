//! The validated, indexed directory. Built from one document per school; an import
//! replaces whole schools, so a re-import is the school's new truth.

use crate::model::{DirectoryDoc, PolicyConfig, Profile, SchoolDoc};
use preau_proto::valid_id;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// An import that was refused; nothing of it was applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DirectoryError {
    /// The document is inconsistent; each line says what and where.
    #[error("invalid directory document: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// A user with the relations the policy needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRec {
    /// Id.
    pub id: String,
    /// School UAI.
    pub school: String,
    /// Profile.
    pub profile: Profile,
    /// Display name.
    pub name: String,
    /// Classes (pupil: own; teacher: taught).
    pub classes: BTreeSet<String>,
    /// Teaching groups.
    pub groups: BTreeSet<String>,
    /// A parent's children.
    pub children: BTreeSet<String>,
    /// A pupil's parents.
    pub parents: BTreeSet<String>,
}

/// A class with its members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassRec {
    /// Id.
    pub id: String,
    /// School UAI.
    pub school: String,
    /// Name.
    pub name: String,
    /// Pupils of the class.
    pub pupils: BTreeSet<String>,
    /// Teachers of the class.
    pub teachers: BTreeSet<String>,
}

/// The directory of every imported school.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    docs: BTreeMap<String, DirectoryDoc>,
    users: HashMap<String, UserRec>,
    /// By (school, class id): class ids are a school's own.
    classes: HashMap<(String, String), ClassRec>,
    /// By (school, group id).
    group_names: HashMap<(String, String), String>,
    /// Each school's direction: its staff and admins, sorted (alerts and reports go to
    /// them without walking the whole platform's users).
    direction: HashMap<String, Vec<String>>,
}

impl Directory {
    /// A directory with no school.
    pub fn empty() -> Self {
        Directory::default()
    }

    /// Builds the directory from documents, each of one or more schools.
    pub fn from_docs(docs: impl IntoIterator<Item = DirectoryDoc>) -> Result<Self, DirectoryError> {
        let mut dir = Directory::empty();
        for d in docs {
            dir = dir.with_import(d)?.0;
        }
        Ok(dir)
    }

    /// This directory with `doc` imported: every school `doc` lists is replaced by what
    /// `doc` says of it. Returns the new directory and the UAIs replaced.
    pub fn with_import(&self, doc: DirectoryDoc) -> Result<(Directory, Vec<String>), DirectoryError> {
        let parts = split(doc, &self.docs)?;
        let replaced: Vec<String> = parts.keys().cloned().collect();
        let mut docs = self.docs.clone();
        docs.extend(parts);
        Ok((Directory::index(docs)?, replaced))
    }

    fn index(docs: BTreeMap<String, DirectoryDoc>) -> Result<Directory, DirectoryError> {
        let mut users = HashMap::new();
        let mut classes = HashMap::new();
        let mut group_names = HashMap::new();
        for d in docs.values() {
            for c in &d.classes {
                classes.insert(
                    (c.school.clone(), c.id.clone()),
                    ClassRec {
                        id: c.id.clone(),
                        school: c.school.clone(),
                        name: c.name.clone(),
                        pupils: BTreeSet::new(),
                        teachers: BTreeSet::new(),
                    },
                );
            }
            for g in &d.groups {
                group_names.insert((g.school.clone(), g.id.clone()), g.name.clone());
            }
            for u in &d.users {
                users.insert(
                    u.id.clone(),
                    UserRec {
                        id: u.id.clone(),
                        school: u.school.clone(),
                        profile: u.profile,
                        name: u.name.clone(),
                        classes: u.classes.iter().cloned().collect(),
                        groups: u.groups.iter().cloned().collect(),
                        children: BTreeSet::new(),
                        parents: BTreeSet::new(),
                    },
                );
                for c in &u.classes {
                    if let Some(rec) = classes.get_mut(&(u.school.clone(), c.clone())) {
                        match u.profile {
                            Profile::Pupil => rec.pupils.insert(u.id.clone()),
                            _ => rec.teachers.insert(u.id.clone()),
                        };
                    }
                }
            }
        }
        for d in docs.values() {
            for l in &d.links {
                if let Some(p) = users.get_mut(&l.parent) {
                    p.children.insert(l.child.clone());
                }
                if let Some(c) = users.get_mut(&l.child) {
                    c.parents.insert(l.parent.clone());
                }
            }
        }
        let mut direction: HashMap<String, Vec<String>> = HashMap::new();
        for u in users.values().filter(|u| matches!(u.profile, Profile::Staff | Profile::Admin)) {
            direction.entry(u.school.clone()).or_default().push(u.id.clone());
        }
        for v in direction.values_mut() {
            v.sort();
        }
        Ok(Directory { docs, users, classes, group_names, direction })
    }

    /// The stored document of each school, to persist the directory.
    pub fn school_docs(&self) -> impl Iterator<Item = (&str, &DirectoryDoc)> {
        self.docs.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// A user.
    pub fn user(&self, id: &str) -> Option<&UserRec> {
        self.users.get(id)
    }

    /// Every user, sorted by id.
    pub fn users(&self) -> Vec<&UserRec> {
        let mut v: Vec<&UserRec> = self.users.values().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// A school's direction: its staff and admins, sorted by id.
    pub fn direction(&self, school: &str) -> &[String] {
        self.direction.get(school).map(Vec::as_slice).unwrap_or_default()
    }

    /// A school's class.
    pub fn class(&self, school: &str, id: &str) -> Option<&ClassRec> {
        self.classes.get(&(school.to_owned(), id.to_owned()))
    }

    /// The classes of a school, sorted by id.
    pub fn classes_of(&self, school: &str) -> Vec<&ClassRec> {
        let mut v: Vec<&ClassRec> = self.classes.values().filter(|c| c.school == school).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// A school's group's name.
    pub fn group_name(&self, school: &str, id: &str) -> Option<&str> {
        self.group_names.get(&(school.to_owned(), id.to_owned())).map(String::as_str)
    }

    /// A school.
    pub fn school(&self, uai: &str) -> Option<&SchoolDoc> {
        self.docs.get(uai).and_then(|d| d.schools.first())
    }

    /// A school's policy configuration (the default when the school is unknown).
    pub fn policy(&self, uai: &str) -> PolicyConfig {
        self.school(uai).map(|s| s.policy.clone()).unwrap_or_default()
    }

    /// Number of users.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }
}

/// Splits a document into one per school, validating everything; `existing` is used to
/// refuse user ids already taken in another school.
fn split(
    doc: DirectoryDoc,
    existing: &BTreeMap<String, DirectoryDoc>,
) -> Result<BTreeMap<String, DirectoryDoc>, DirectoryError> {
    let mut problems = Vec::new();
    let mut parts: BTreeMap<String, DirectoryDoc> = BTreeMap::new();
    for s in doc.schools {
        if !valid_id(&s.uai) {
            problems.push(format!("school `{}`: invalid UAI", s.uai));
            continue;
        }
        if parts.contains_key(&s.uai) {
            problems.push(format!("school `{}` listed twice", s.uai));
            continue;
        }
        if let Some(Err(why)) = s.policy.discussion_hours.as_ref().map(|h| h.validate()) {
            problems.push(format!("school `{}`: {why}", s.uai));
        }
        if s.data.departed_retention_days.is_some_and(|d| d > 3650) {
            problems.push(format!("school `{}`: data.departed_retention_days is at most 3650", s.uai));
        }
        if s.data.message_retention_days.is_some_and(|d| d > 3650) {
            problems.push(format!("school `{}`: data.message_retention_days is at most 3650", s.uai));
        }
        let uai = s.uai.clone();
        parts.insert(uai, DirectoryDoc { schools: vec![s], ..DirectoryDoc::default() });
    }
    // Class and group ids are a school's own: two schools may both have a `6A`.
    let mut class_school: BTreeSet<(String, String)> = BTreeSet::new();
    let mut group_school: BTreeSet<(String, String)> = BTreeSet::new();
    for c in doc.classes {
        if !valid_id(&c.id) {
            problems.push(format!("class `{}`: invalid id", c.id));
        } else if class_school.contains(&(c.school.clone(), c.id.clone())) {
            problems.push(format!("class `{}` listed twice in school `{}`", c.id, c.school));
        } else if let Some(p) = parts.get_mut(&c.school) {
            class_school.insert((c.school.clone(), c.id.clone()));
            p.classes.push(c);
        } else {
            problems.push(format!("class `{}`: school `{}` is not in the document", c.id, c.school));
        }
    }
    for g in doc.groups {
        if !valid_id(&g.id) {
            problems.push(format!("group `{}`: invalid id", g.id));
        } else if group_school.contains(&(g.school.clone(), g.id.clone())) {
            problems.push(format!("group `{}` listed twice in school `{}`", g.id, g.school));
        } else if let Some(p) = parts.get_mut(&g.school) {
            group_school.insert((g.school.clone(), g.id.clone()));
            p.groups.push(g);
        } else {
            problems.push(format!("group `{}`: school `{}` is not in the document", g.id, g.school));
        }
    }
    let taken_elsewhere: HashMap<&str, &str> = existing
        .iter()
        .filter(|(uai, _)| !parts.contains_key(*uai))
        .flat_map(|(uai, d)| d.users.iter().map(move |u| (u.id.as_str(), uai.as_str())))
        .collect();
    let mut user_profile: HashMap<String, (Profile, String)> = HashMap::new();
    for u in doc.users {
        let who = format!("user `{}`", u.id);
        if !valid_id(&u.id) {
            problems.push(format!("{who}: invalid id"));
            continue;
        }
        if user_profile.contains_key(&u.id) {
            problems.push(format!("{who} listed twice"));
            continue;
        }
        if let Some(other) = taken_elsewhere.get(u.id.as_str()) {
            problems.push(format!("{who} already belongs to school `{other}`"));
            continue;
        }
        if u.name.trim().is_empty() {
            problems.push(format!("{who}: empty name"));
        }
        for c in &u.classes {
            if !class_school.contains(&(u.school.clone(), c.clone())) {
                problems.push(format!("{who}: class `{c}` is not a class of school `{}`", u.school));
            }
        }
        for g in &u.groups {
            if !group_school.contains(&(u.school.clone(), g.clone())) {
                problems.push(format!("{who}: group `{g}` is not a group of school `{}`", u.school));
            }
        }
        if !u.classes.is_empty() && !matches!(u.profile, Profile::Pupil | Profile::Teacher) {
            problems.push(format!("{who}: only pupils and teachers belong to classes"));
        }
        if u.profile == Profile::Pupil && u.classes.len() > 1 {
            problems.push(format!("{who}: a pupil belongs to one class"));
        }
        let Some(p) = parts.get_mut(&u.school) else {
            problems.push(format!("{who}: school `{}` is not in the document", u.school));
            continue;
        };
        user_profile.insert(u.id.clone(), (u.profile, u.school.clone()));
        p.users.push(u);
    }
    let mut seen_links = BTreeSet::new();
    for l in doc.links {
        let what = format!("link `{}` -> `{}`", l.parent, l.child);
        match (user_profile.get(&l.parent), user_profile.get(&l.child)) {
            (Some((Profile::Parent, ps)), Some((Profile::Pupil, cs))) => {
                if ps != cs {
                    problems.push(format!("{what}: parent and child are in different schools"));
                } else if !seen_links.insert((l.parent.clone(), l.child.clone())) {
                    problems.push(format!("{what} listed twice"));
                } else if let Some(p) = parts.get_mut(cs) {
                    p.links.push(l);
                }
            }
            _ => problems.push(format!("{what}: needs a parent and a pupil of the document")),
        }
    }
    if problems.is_empty() { Ok(parts) } else { Err(DirectoryError::Invalid(problems)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo;
    use crate::model::*;

    #[test]
    fn demo_school_indexes() {
        let d = Directory::from_docs([demo::demo_doc()]).expect("demo is valid");
        let counts = |p: Profile| d.users().iter().filter(|u| u.profile == p).count();
        assert_eq!(counts(Profile::Pupil), 75);
        assert_eq!(counts(Profile::Parent), 100);
        assert!(counts(Profile::Teacher) >= 6);
        assert_eq!(counts(Profile::Staff), 2);
        assert_eq!(d.classes_of(demo::SCHOOL).len(), 3);
        assert_eq!(d.direction(demo::SCHOOL), ["ad01", "s01", "s02"]);
        assert!(d.direction("nowhere").is_empty());
        let c = d.class(demo::SCHOOL, "6A").expect("6A");
        assert_eq!(c.pupils.len(), 25);
        assert!(d.user("pa001").expect("pa001").children.len() == 2);
    }

    #[test]
    fn reimport_replaces_the_school() {
        let d = Directory::from_docs([demo::demo_doc()]).expect("demo");
        let mut doc = demo::demo_doc();
        for u in &mut doc.users {
            if u.id == "e001" {
                u.classes = vec!["5B".into()];
            }
        }
        doc.users.retain(|u| u.id != "e002");
        doc.links.retain(|l| l.child != "e002");
        let (d2, replaced) = d.with_import(doc).expect("valid");
        assert_eq!(replaced, vec![demo::SCHOOL.to_owned()]);
        assert!(d2.class(demo::SCHOOL, "5B").expect("5B").pupils.contains("e001"));
        assert!(!d2.class(demo::SCHOOL, "6A").expect("6A").pupils.contains("e001"));
        assert!(d2.user("e002").is_none());
    }

    #[test]
    fn refuses_inconsistent_documents() {
        let doc = DirectoryDoc {
            schools: vec![SchoolDoc {
                uai: "S1".into(),
                name: "S".into(),
                policy: PolicyConfig::default(),
                data: Default::default(),
            }],
            classes: vec![ClassDoc { id: "c1".into(), school: "S2".into(), name: "x".into() }],
            groups: vec![],
            users: vec![
                UserDoc {
                    id: "bad id".into(),
                    school: "S1".into(),
                    profile: Profile::Pupil,
                    name: "x".into(),
                    classes: vec![],
                    groups: vec![],
                },
                UserDoc {
                    id: "p".into(),
                    school: "S1".into(),
                    profile: Profile::Parent,
                    name: "x".into(),
                    classes: vec!["c1".into()],
                    groups: vec![],
                },
            ],
            links: vec![LinkDoc { parent: "p".into(), child: "nobody".into() }],
        };
        let Err(DirectoryError::Invalid(problems)) = Directory::empty().with_import(doc) else {
            panic!("must be refused");
        };
        assert!(problems.len() >= 4, "{problems:?}");
    }
}
