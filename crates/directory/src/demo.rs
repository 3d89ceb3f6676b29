//! The demo school: one collège, 3 classes of 25 pupils, 7 teachers, 100 parents linked
//! to their children, 2 staff and a school administrator. Deterministic, so tests can name
//! its users.
//!
//! Ids: pupils `e001`..`e075` (`e001`-`e025` in 6A, `e026`-`e050` in 5B, `e051`-`e075` in
//! 4C); parents `pa001`..`pa100` (`paNNN` is a parent of `eNNN` for N <= 75, `pa076`..`pa100`
//! are second parents of `e001`..`e025`, and `pa001` is also the parent of `e026`);
//! teachers `t01`..`t07`; staff `s01`, `s02`; admin `ad01`. The Latin group gathers
//! `e003`-`e005`, `e028`-`e030` and `t07`.

use crate::model::*;

/// The demo school's UAI.
pub const SCHOOL: &str = "0750001A";

const FIRST: &[&str] = &[
    "Léa", "Hugo", "Chloé", "Louis", "Emma", "Lucas", "Inès", "Nathan", "Jade", "Théo", "Manon", "Adam", "Camille",
    "Raphaël", "Sarah", "Gabriel", "Lina", "Arthur", "Zoé", "Jules", "Louise", "Yanis", "Alice", "Noah", "Anna",
];
const LAST: &[&str] = &[
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau", "Simon",
    "Laurent", "Lefebvre", "Michel", "Garcia", "David", "Bertrand", "Roux", "Vincent", "Fournier", "Morel", "Girard",
    "André", "Mercier", "Dupont", "Lambert", "Bonnet", "Fontaine", "Rousseau", "Blanc",
];

fn user(id: String, profile: Profile, name: String, classes: &[&str], groups: &[&str]) -> UserDoc {
    UserDoc {
        id,
        school: SCHOOL.into(),
        profile,
        name,
        classes: classes.iter().map(|s| (*s).to_owned()).collect(),
        groups: groups.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// The demo school as an import document.
pub fn demo_doc() -> DirectoryDoc {
    let classes = [("6A", "6e A"), ("5B", "5e B"), ("4C", "4e C")];
    let mut users = Vec::new();
    let teachers: [(&str, &str, &[&str], &[&str]); 7] = [
        ("t01", "Mme Colin (français)", &["6A", "5B"], &[]),
        ("t02", "M. Perrin (mathématiques)", &["6A", "4C"], &[]),
        ("t03", "Mme Chevalier (histoire-géographie)", &["4C"], &[]),
        ("t04", "M. Gauthier (anglais)", &["5B", "4C"], &[]),
        ("t05", "Mme Masson (SVT)", &["6A"], &[]),
        ("t06", "M. Henry (EPS)", &["5B"], &[]),
        ("t07", "Mme Roussel (latin)", &[], &["latin"]),
    ];
    for (id, name, cls, grps) in teachers {
        users.push(user(id.into(), Profile::Teacher, name.into(), cls, grps));
    }
    let mut links = Vec::new();
    for n in 1..=75usize {
        let class = classes[(n - 1) / 25].0;
        let latin = matches!(n, 3..=5 | 28..=30);
        let last = LAST[n % LAST.len()];
        let first = FIRST[(n * 7) % FIRST.len()];
        users.push(user(
            format!("e{n:03}"),
            Profile::Pupil,
            format!("{first} {last}"),
            &[class],
            if latin { &["latin"] } else { &[] },
        ));
        users.push(user(format!("pa{n:03}"), Profile::Parent, format!("Parent {last} ({n})"), &[], &[]));
        links.push(LinkDoc { parent: format!("pa{n:03}"), child: format!("e{n:03}") });
    }
    for n in 76..=100usize {
        let child = n - 75;
        let last = LAST[child % LAST.len()];
        users.push(user(format!("pa{n:03}"), Profile::Parent, format!("Parent {last} ({n})"), &[], &[]));
        links.push(LinkDoc { parent: format!("pa{n:03}"), child: format!("e{child:03}") });
    }
    links.push(LinkDoc { parent: "pa001".into(), child: "e026".into() });
    users.push(user("s01".into(), Profile::Staff, "M. Lemoine (CPE)".into(), &[], &[]));
    users.push(user("s02".into(), Profile::Staff, "Mme Caron (secrétariat)".into(), &[], &[]));
    users.push(user("ad01".into(), Profile::Admin, "Administrateur ENT".into(), &[], &[]));
    DirectoryDoc {
        schools: vec![SchoolDoc {
            uai: SCHOOL.into(),
            name: "Collège Jean Zay (démo)".into(),
            policy: PolicyConfig::default(),
            data: Default::default(),
        }],
        classes: classes
            .iter()
            .map(|(id, name)| ClassDoc { id: (*id).into(), school: SCHOOL.into(), name: (*name).into() })
            .collect(),
        groups: vec![GroupDoc { id: "latin".into(), school: SCHOOL.into(), name: "Latin".into() }],
        users,
        links,
    }
}
